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
A composite exported to a skill file carries its recipe (skills/recipe.py); ``add`` of that file
mixes it again from the sources this registry holds (:func:`plan_file_composites`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from typing import TYPE_CHECKING

from skillsoup.errors import RegistryError, SkillConflictError
from skillsoup.registry.store import fp_key
from skillsoup.registry.values import AddResult
from skillsoup.skills.recipe import RECIPE_FORMAT, Recipe, RecipePart  # noqa: F401 (re-exported)
from skillsoup.skills.skill import Skill

if TYPE_CHECKING:
    from skillsoup.models.base import StateModel
    from skillsoup.registry.index import SkillRow
    from skillsoup.registry.values import RegistryCore
    from skillsoup.states.state import SkillState

log = logging.getLogger(__name__)

RECIPE_KEY = "recipe"
OK, REMOVED, CHANGED = "ok", "removed", "changed"


def recipe_of(row: SkillRow) -> Recipe | None:
    """The row's recipe, None for a plain skill; RegistryError when it cannot be read."""
    text = row.metadata.get(RECIPE_KEY)
    if text is None:
        return None
    try:
        return Recipe.from_json(str(text))
    except ValueError as exc:
        raise RegistryError(f"the recipe of composite skill {row.name!r} is unreadable ({exc}); "
                            "compose it again with skillsoup compose --replace") from None


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


# ---- composites read from skill files (``skills export`` then ``add``) --------------------------
def plan_file_composites(reg: RegistryCore, composites: list[Skill], plain: list[Skill], current: dict[str, dict],
                         replace: bool) -> list[tuple[Skill, Recipe, str]]:
    """(skill, recipe to store, "added" / "unchanged" / "replaced") for each skill that carries a
    recipe, sources before the composites that mix them. Each source must be in the registry or among
    ``plain`` (added in the same call), with the state hash it had when the weights were found (the
    state is what the weights were searched for; a new description does not matter). Raises one
    RegistryError before anything is written. ``current``: the registry's skill metadata by name."""
    have = {n: (m.get("content_hash"), m.get("state_hash")) for n, m in current.items()}
    have.update((s.name, (s.content_hash, s.state_hash)) for s in plain)
    pending, out = list(composites), []
    while pending:
        ready = [s for s in pending if all(p.name in have for p in s.recipe.parts)]
        if not ready:
            s = pending[0]
            name = next(p.name for p in s.recipe.parts if p.name not in have)
            raise RegistryError(f"composite skill {s.name!r} mixes skill {name!r}, which registry {reg.path} does "
                                f"not hold; add {name!r} first (or in the same skillsoup add call), then the composite")
        for s in ready:
            parts = []
            for p in s.recipe.parts:
                content_hash, state_hash = have[p.name]
                if state_hash != p.state_hash:
                    raise RegistryError(
                        f"composite skill {s.name!r} mixes {p.name!r} as it was when its weights were found, but registry "
                        f"{reg.path} holds another version of it (other demonstrations or template); add that version, "
                        f"or compose {s.name!r} again from its demonstrations (skillsoup compose {s.name} --from "
                        f"{','.join(q.name for q in s.recipe.parts)} --examples FILE)")
                parts.append(dataclasses.replace(p, content_hash=content_hash))
            recipe = dataclasses.replace(s.recipe, parts=tuple(parts))
            old = current.get(s.name)
            status = "added" if old is None else "unchanged" if (old.get("content_hash"), old.get("state_hash")) == \
                (s.content_hash, recipe.state_hash) and old.get(RECIPE_KEY) is not None else "replaced"
            if status == "replaced" and not replace:
                raise SkillConflictError(f"skill {s.name!r} already in the registry with different content; add "
                                         "with --replace to overwrite, or rename", (s.name,))
            have[s.name] = (s.content_hash, recipe.state_hash)
            out.append((s, recipe, status))
        pending = [s for s in pending if s not in ready]
    return out


def add_file_composite(reg: RegistryCore, skill: Skill, recipe: Recipe, status: str, model: StateModel) -> AddResult:
    """One planned composite of :func:`plan_file_composites`, its state mixed from the sources' states
    for ``model`` (an unchanged one only gets a state for a model that has none). The caller holds the lock."""
    if status != "unchanged":
        return add_composite(reg, skill, recipe, model, replace=status == "replaced")
    t0 = time.perf_counter()
    reg.state(skill.name, model)
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
