"""compose_skill: the registry-level entry point of compose (the CLI's): search weights for registry
skills and save the result as a composite skill (see :mod:`skillsoup.registry.composite`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from skillsoup.compose.examples import split_examples
from skillsoup.compose.weights import DEFAULT_BUDGET, CompositionResult, check_budget, compose
from skillsoup.errors import MixError, SkillFileError
from skillsoup.registry.composite import Recipe, RecipePart, check_composite_name
from skillsoup.skills.rules import Located, SkillDraft, Where, build_skill
from skillsoup.skills.skill import Demonstration, Skill

if TYPE_CHECKING:
    from skillsoup.models.base import StateModel
    from skillsoup.registry import AddResult, SkillRegistry


def compose_skill(registry: SkillRegistry, model: StateModel, name: str, source_names: Sequence[str],
                  examples: Sequence[Demonstration], *, template: str | None = None, description: str | None = None,
                  budget: int = DEFAULT_BUDGET, seed: int = 0, holdout: float = 0.0, conv: str = "mix",
                  replace: bool = False, kv: str = "top") -> tuple[CompositionResult, AddResult]:
    """Run :func:`compose` on registry skills and save the result as the composite skill ``name``:
    the search examples as its demonstrations (for routing), the held-out ones as its tests, its
    recipe in the index and the mixed state in the store (see :mod:`skillsoup.registry.composite`)."""
    check_composite_name(name, registry, replace)
    source_names = [s.strip() for s in source_names if s.strip()]
    if len(set(source_names)) != len(source_names):
        raise MixError(f"a source skill is listed twice in {source_names}; give each once")
    if name in source_names:
        raise MixError(f"composite {name!r} cannot be one of its own sources; choose another name")
    if len(source_names) < 2:
        raise MixError(f"compose needs at least 2 source skills, got {len(source_names)}; list them with --from A,B")
    check_budget(budget)
    search, held = split_examples(examples, holdout, seed)  # checks holdout before any work
    skills = [registry.get(n) for n in source_names]  # SkillNotFoundError names the missing one
    chosen = template if template is not None else skills[0].template
    template_skill = _template_skill(chosen, examples)
    rows = {n: registry.info(n) for n in source_names}  # the versions whose states are searched
    states = {n: registry.state(n, model) for n in source_names}
    result = compose(model, states, examples, template_skill, budget=budget, seed=seed, holdout=holdout, conv=conv,
                     kv=kv)
    recipe = Recipe(
        parts=tuple(RecipePart(n, rows[n].content_hash, rows[n].state_hash, w) for n, w in zip(source_names, result.weights)),
        conv=conv, method=result.method, model=model.fingerprint, n_examples=result.n_search, n_holdout=result.n_holdout,
        budget=budget, seed=seed, nll_uniform=result.uniform_nll, nll_best=result.best_nll,
        nll_uniform_holdout=result.uniform_holdout_nll, nll_best_holdout=result.best_holdout_nll, kv=kv,
    )
    text = description or "Composite of " + " and ".join(f"{s.name} ({w:.2f})" for s, w in zip(skills, result.weights)) \
        + ": " + " / ".join(s.description for s in skills)
    skill = Skill(name=name, description=text[:2000], demonstrations=tuple(search), template=chosen,
                  tags=("composite",), tests=tuple(held), source="compose")
    added = registry.add_composite(skill, recipe, model, replace=replace)
    return result, added


def _template_skill(template: str, examples: Sequence[Demonstration]) -> Skill:
    """The template checked as skill files check theirs (placeholders, stop strings vs outputs)."""
    where = Where(1)
    draft = SkillDraft("--template", where, {"name": Located("composite", where),
                                             "description": Located("template", where), "template": Located(template, where)})
    for ex in examples:
        draft.add_pair(Located(ex.input, where), Located(ex.output, where), where, False)
    try:
        return build_skill(draft)
    except SkillFileError as exc:
        raise MixError(str(exc).removeprefix("--template:1: ")) from None
