"""A composite skill's recipe: which skills' states it mixes, with which weights and policies, and
how the weights were found (``skillsoup compose``; the registry keeps it beside the skill row,
registry/composite.py).

It lives with the skills because it travels with one: ``skillsoup skills export`` writes it under
``recipe:`` in the YAML skill file, in the form :meth:`Recipe.to_dict` gives (docs/skills.md), and
``skillsoup add`` of that file rebuilds the composite from the sources the registry holds.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, fields

RECIPE_FORMAT = "skillsoup-recipe/1"


@dataclass(frozen=True)
class RecipePart:
    name: str
    content_hash: str  # the source skill's content hash when the weights were found
    state_hash: str  # ... and its state hash
    weight: float


@dataclass(frozen=True)
class Recipe:
    parts: tuple[RecipePart, ...]
    conv: str  # mixing.mix's conv policy
    method: str  # how the weights were found, e.g. "cma-es/simplex"
    model: str  # fingerprint of the model the weights were searched with
    n_examples: int  # examples searched on
    n_holdout: int = 0  # examples held out
    budget: int = 0
    seed: int = 0
    nll_uniform: float | None = None
    nll_best: float | None = None
    nll_uniform_holdout: float | None = None
    nll_best_holdout: float | None = None
    kv: str = "top"  # mixing.mix's KV policy (hybrid models); recipes written before it read "top"

    @property
    def weights(self) -> list[float]:
        return [p.weight for p in self.parts]

    @property
    def state_hash(self) -> str:
        """sha256 of what the mixed state depends on: the sources' states, the weights, the policies
        (the KV policy only when it is not the default, so recipes written before it keep their hash)."""
        policies = [self.conv] + ([self.kv] if self.kv != "top" else [])
        blob = json.dumps([RECIPE_FORMAT, [[p.state_hash, p.weight] for p in self.parts], *policies])
        return hashlib.sha256(blob.encode()).hexdigest()

    def to_dict(self) -> dict:
        """Plain data, ``format`` first: what the registry stores (as JSON) and an export writes."""
        return {"format": RECIPE_FORMAT, **asdict(self), "parts": [asdict(p) for p in self.parts]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> Recipe:
        """ValueError (saying what is wrong) for anything but a recipe :meth:`to_json` could write."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: object) -> Recipe:
        """The recipe of :meth:`to_dict`'s plain data, every field checked; ValueError otherwise."""
        if not isinstance(data, Mapping):
            raise ValueError("a recipe is a mapping (format:, parts:, conv:, ...)")
        data = dict(data)
        if data.pop("format", None) != RECIPE_FORMAT:
            raise ValueError(f"its format: must be {RECIPE_FORMAT}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known), key=str)
        if unknown:
            raise ValueError(f"unknown key {unknown[0]!r}; a recipe has {', '.join(['format', *known])}")
        missing = [n for n, f in known.items() if f.default is MISSING and n not in data]
        if missing:
            raise ValueError(f"it has no {missing[0]}:")
        parts = data.pop("parts")
        if not isinstance(parts, (list, tuple)) or len(parts) < 2:
            raise ValueError("parts: must list at least 2 sources (- name: ..., weight: ..., content_hash: ..., "
                             "state_hash: ...)")
        values = {"parts": tuple(_part(p, i + 1) for i, p in enumerate(parts))}
        for name, value in data.items():
            values[name] = _field(name, value)
        recipe = cls(**values)
        _check_policies(recipe)
        return recipe


_STRINGS = ("conv", "method", "model", "kv")
_INTS = ("n_examples", "n_holdout", "budget", "seed")


def _field(name: str, value: object):
    if name in _STRINGS and isinstance(value, str):
        return value
    if name in _INTS and isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if name.startswith("nll_") and (value is None or _is_number(value)):
        return None if value is None else float(value)
    kind = "text" if name in _STRINGS else "a whole number >= 0" if name in _INTS else "a number or null"
    raise ValueError(f"{name}: must be {kind}, got {value!r}")


def _part(item: object, number: int) -> RecipePart:
    where = f"source {number} of parts:"
    if not isinstance(item, Mapping) or set(item) != {"name", "content_hash", "state_hash", "weight"}:
        raise ValueError(f"{where} must have exactly name:, weight:, content_hash: and state_hash:")
    for key in ("name", "content_hash", "state_hash"):
        if not isinstance(item[key], str) or not item[key]:
            raise ValueError(f"{where} {key}: must be non-empty text, got {item[key]!r}")
    if not _is_number(item["weight"]):
        raise ValueError(f"{where} weight: must be a finite number, got {item['weight']!r}")
    return RecipePart(item["name"], item["content_hash"], item["state_hash"], float(item["weight"]))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_policies(recipe: Recipe) -> None:
    from skillsoup.states.mixing import CONV_POLICIES, KV_POLICIES  # imports torch: only when a recipe is read

    if recipe.conv not in CONV_POLICIES:
        raise ValueError(f"conv: must be one of {', '.join(CONV_POLICIES)}, got {recipe.conv!r}")
    if recipe.kv not in KV_POLICIES:
        raise ValueError(f"kv: must be one of {', '.join(KV_POLICIES)}, got {recipe.kv!r}")
