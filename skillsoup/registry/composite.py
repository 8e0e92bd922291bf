"""Composite skills: a skill whose state is a weighted mix of other skills' states (``skillsoup compose``).

How the registry holds one:
    skill row     an ordinary row (routable like any skill): the document is the Skill (the examples
                  the weights were searched on as its demonstrations, held-out ones as its tests,
                  tag ``composite``); metadata adds ``recipe`` (JSON, see :class:`Recipe`) and sets
                  ``state_hash`` to the recipe's hash instead of the demonstrations' hash
    state file    the mixed state, stored like any state under that hash, per model
The recipe names each source with the content hash and state hash it had when the weights were
found. Recomputing a composite's state (another model, a corrupted file) re-mixes the sources'
current states with the recorded weights; it refuses, with a RegistryError, when a source was
removed or changed since. The stored mix stays usable either way: ``doctor`` and ``skills show``
report such sources, nothing crashes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from skillsoup.errors import RegistryError
from skillsoup.registry.store import fp_key
from skillsoup.registry.values import AddResult
from skillsoup.skills.skill import Skill

if TYPE_CHECKING:
    from skillsoup.models.base import StateModel
    from skillsoup.registry.index import SkillRow
    from skillsoup.registry.values import RegistryCore
    from skillsoup.states.state import SkillState

log = logging.getLogger(__name__)

RECIPE_KEY = "recipe"
RECIPE_FORMAT = "skillsoup-recipe/1"
OK, REMOVED, CHANGED = "ok", "removed", "changed"


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

    def to_json(self) -> str:
        return json.dumps({"format": RECIPE_FORMAT, **asdict(self)}, sort_keys=True, allow_nan=False)

    @classmethod
    def from_json(cls, text: str, name: str = "?") -> Recipe:
        try:
            d = json.loads(text)
            if d.pop("format", None) != RECIPE_FORMAT:
                raise ValueError(f"format is not {RECIPE_FORMAT}")
            parts = tuple(RecipePart(str(p["name"]), str(p["content_hash"]), str(p["state_hash"]), float(p["weight"]))
                          for p in d.pop("parts"))
            return cls(parts=parts, **d)
        except (ValueError, KeyError, TypeError) as exc:
            raise RegistryError(f"the recipe of composite skill {name!r} is unreadable ({exc}); "
                                "compose it again with skillsoup compose --replace") from None


def recipe_of(row: SkillRow) -> Recipe | None:
    """The row's recipe, None for a plain skill; RegistryError when it cannot be read."""
    text = row.metadata.get(RECIPE_KEY)
    return None if text is None else Recipe.from_json(str(text), row.name)


def recipe_dict(row: SkillRow) -> dict | None:
    """The recipe as plain data for listings; an unreadable one reads {"error": ...} (doctor reports it)."""
    try:
        recipe = recipe_of(row)
    except RegistryError as exc:  # listing never fails on one bad row
        log.warning("%s", exc)
        return {"error": str(exc)}
    return None if recipe is None else json.loads(recipe.to_json())


def part_status(recipe: Recipe, rows: dict[str, SkillRow]) -> list[tuple[RecipePart, str]]:
    """Each source with OK, REMOVED (no such skill now) or CHANGED (other content or state)."""
    out = []
    for p in recipe.parts:
        row = rows.get(p.name)
        status = REMOVED if row is None else OK if (row.content_hash, row.state_hash) == (p.content_hash, p.state_hash) else CHANGED
        out.append((p, status))
    return out


def broken_parts(reg: RegistryCore, recipe: Recipe) -> list[str]:
    """'name (removed)' / 'name (changed)' for every source that no longer matches the recipe."""
    rows = reg.index.get_skills([p.name for p in recipe.parts])
    return [f"{p.name} ({status})" for p, status in part_status(recipe, rows) if status != OK]


def remix_blockers(reg: RegistryCore, row: SkillRow) -> list[str]:
    """Why a composite's state cannot be remixed now (empty: it can, or it is a plain skill)."""
    try:
        recipe = recipe_of(row)
    except RegistryError:
        return ["recipe unreadable"]
    return [] if recipe is None else [f"source {b}" for b in broken_parts(reg, recipe)]


def mix_recipe(reg: RegistryCore, name: str, recipe: Recipe, model: StateModel) -> SkillState:
    """The composite's state for ``model``: its sources' current states mixed with the recipe's weights."""
    from skillsoup.states.mixing import mix

    broken = broken_parts(reg, recipe)
    if broken:
        raise RegistryError(
            f"composite skill {name!r} cannot be remixed for model {model.fingerprint[:12]}: source "
            f"{', '.join(broken)} since it was composed; compose it again (skillsoup compose {name} --replace ...) "
            "or remove it"
        )
    if recipe.model != model.fingerprint:
        log.warning("composite %r: weights were searched with model %s, reused for model %s", name,
                    recipe.model[:12], model.fingerprint[:12])
    states = [reg.state(p.name, model) for p in recipe.parts]
    state = mix(states, recipe.weights, conv=recipe.conv, kv=recipe.kv)
    state.meta.update(skill=name, state_hash=recipe.state_hash)
    return state


def check_composite_name(name: str, reg: RegistryCore, replace: bool) -> None:
    from skillsoup.skills.rules import NAME_PATTERN

    reg.check_writable("add a composite skill")  # before the search, which takes a while
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise RegistryError(f"composite name {name!r} is not valid: use lowercase letters, digits, '-' and '_', "
                            "starting with a letter or digit, at most 64 characters")
    if not replace and name in reg:
        raise RegistryError(f"skill {name!r} is already in the registry; pass --replace to overwrite it, or choose another name")


def add_composite(reg: RegistryCore, skill: Skill, recipe: Recipe, model: StateModel, replace: bool) -> AddResult:
    """Write a composite in the registry's commit order (state file, demonstration rows, skill row,
    then the old version's leftovers). The caller holds the lock."""
    t0 = time.perf_counter()
    check_composite_name(skill.name, reg, replace)
    if len(recipe.parts) < 2:
        raise RegistryError(f"composite {skill.name!r} needs at least 2 sources, its recipe has {len(recipe.parts)}")
    old = reg.index.skill_metadata([skill.name]).get(skill.name)
    state = mix_recipe(reg, skill.name, recipe, model)
    state_hash = recipe.state_hash
    sha = reg.store.put(state, state_hash)  # 1. the state file
    vectors = reg.embed_skills([skill])[skill.name]
    reg.index.put_demos(skill, vectors[1])  # 2. demonstration rows
    fp16 = fp_key(model.fingerprint)
    drop = [] if old is None or old.get("state_hash") == state_hash else \
        [k[3:] for k in old if k.startswith("fp_") and k[3:] != fp16]
    reg.index.put_skills([(skill, vectors[0], {fp16: (model.fingerprint, sha)}, drop)],  # 3. the commit mark
                         extra=[{"state_hash": state_hash, RECIPE_KEY: recipe.to_json()}])
    reg.index.share_state(state_hash, model.fingerprint, sha)
    if old is not None:  # 4. leftovers of the replaced version
        reg.index.delete_stale_demos(skill.name, skill.content_hash)
        if old.get("state_hash") != state_hash:
            others = {m.get("state_hash") for n, m in reg.index.skill_metadata().items() if n != skill.name}
            reg.drop_state_files(old, in_use=old.get("state_hash") in others)
    status = "added" if old is None else "replaced"
    log.info("composite %r %s: %s", skill.name, status, ", ".join(f"{p.name}={p.weight:.3f}" for p in recipe.parts))
    return AddResult(skill.name, status, len(skill.demonstrations), time.perf_counter() - t0)


def dependents(reg: RegistryCore, name: str) -> list[str]:
    """Composite skills that list ``name`` among their sources."""
    out = []
    for rid, row in reg.index.get_skills().items():
        try:
            recipe = recipe_of(row)
        except RegistryError:
            continue
        if recipe is not None and any(p.name == name for p in recipe.parts):
            out.append(rid)
    return sorted(out)
