"""What a route gives: :class:`SkillMatch` values, and the last step of every route (:func:`finish`).

:func:`finish` runs on every routed decision (text, state, hybrid, classifier; not on pinned skills,
which are the user's own mix):

1. A skill whose weight is zero in float32, the precision states are mixed in, adds nothing to the
   mix: it is dropped, so it is neither mixed nor listed as used.
2. A composite skill's state is already a mix of its sources (``skillsoup compose``). A source routed
   beside a composite that contains it (directly, or through a composite among its sources) would be
   counted twice: once inside the composite's mix and once on its own. It is dropped from the route
   and its weight given to that composite (to the highest-weighted one when several hold it; a
   composite held by another routed composite goes into that one the same way). The folded names are
   kept in ``SkillMatch.folded``. The other skills keep the weights the router gave them.
3. The weights are normalised to sum 1 and the matches ordered by weight, so the first one (whose
   template renders the query) is the heaviest.

Why the composite takes its sources' weight, and not the reverse (expanding the composite into its
sources): the composite's state is the mix its weights were searched for and measured on, with its
own conv and KV policies. Folding keeps it exact: a route of a composite and its sources injects that
stored state unchanged, whereas re-mixing the sources around it moves off the searched weights and,
under the ``top`` conv or KV policies (which keep one state's window, not a weighted sum), is no
linear mix of the sources at all. See docs/compose.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from skillsoup.errors import RegistryError

if TYPE_CHECKING:
    from skillsoup.registry.registry import SkillRegistry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SkillMatch:
    """One routed skill: ``score`` on the policy's scale (cosine, or probability for ``logistic``;
    1.0 for a pinned skill), ``weight`` its share of the mixture (the weights of a route sum to 1),
    ``folded`` the sources of this composite that the route found too and whose weight it took."""

    name: str
    score: float
    weight: float
    folded: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "folded", tuple(self.folded))  # a list after a JSON round trip


def weight_text(weight: float) -> str:
    """A weight as the CLI and chat print it: two decimals, "<0.01" for a share that rounds to 0.00."""
    return "<0.01" if 0.0 < weight < 0.005 else f"{weight:.2f}"


def finish(matches: Sequence[SkillMatch],
           sources_of: Callable[[list[str]], Mapping[str, frozenset[str]]]) -> list[SkillMatch]:
    """Steps 1-3 of the module docstring. ``sources_of(names)``: each composite among ``names``
    -> every skill its state mixes (nested composites' sources included); plain skills absent."""
    kept = [m for m in matches if np.float32(m.weight) > 0]
    if len(kept) > 1:
        kept = _fold(kept, sources_of([m.name for m in kept]))
    total = sum(m.weight for m in kept)
    kept = [replace(m, weight=m.weight / total) for m in kept]
    return sorted(kept, key=lambda m: -m.weight)  # stable: equal weights keep the router's order


def _fold(matches: list[SkillMatch], sources: Mapping[str, frozenset[str]]) -> list[SkillMatch]:
    def holds(c: str, m: str) -> bool:  # c contains m and not the other way (a cycle of recipes holds nothing)
        return c != m and m in sources.get(c, ()) and c not in sources.get(m, ())

    weight_of = {m.name: m.weight for m in matches}
    roots = [n for n in weight_of if not any(holds(c, n) for c in weight_of)]
    by_weight = sorted(roots, key=lambda n: -weight_of[n])
    gained: dict[str, list[SkillMatch]] = {n: [] for n in roots}
    for m in matches:
        if m.name not in gained:  # held by a routed composite: a root holds it too (containment is transitive)
            gained[next(c for c in by_weight if holds(c, m.name))].append(m)
    out = []
    for m in matches:
        if m.name in roots:
            extra = gained[m.name]
            out.append(replace(m, weight=m.weight + sum(e.weight for e in extra),
                               folded=m.folded + tuple(e.name for e in extra)) if extra else m)
    return out


def composite_sources(registry: SkillRegistry, names: Iterable[str]) -> dict[str, frozenset[str]]:
    """Each composite among ``names`` -> the skills its state mixes, through nested composites.
    Rows come through the registry's recent-rows memory (one index read per route on a server); an
    unreadable recipe counts as no sources (``doctor`` reports it)."""
    from skillsoup.registry.composite import recipe_of

    parts: dict[str, tuple[str, ...]] = {}
    todo = list(dict.fromkeys(names))
    while todo:
        rows = registry.index.recent_skills(todo, registry.rows_max_age)
        for name in todo:
            try:
                recipe = recipe_of(rows[name]) if name in rows else None
            except RegistryError as exc:
                log.warning("%s", exc)
                recipe = None
            parts[name] = () if recipe is None else tuple(p.name for p in recipe.parts)
        todo = list(dict.fromkeys(p for name in todo for p in parts[name] if p not in parts))
    out = {}
    for name in dict.fromkeys(names):
        seen, stack = set(), list(parts[name])
        while stack:
            p = stack.pop()
            if p not in seen:
                seen.add(p)
                stack.extend(parts.get(p, ()))
        if seen:
            out[name] = frozenset(seen)
    return out
