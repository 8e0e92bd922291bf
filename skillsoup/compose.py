"""Compose: find mixing weights for a few skills' states from a handful of (input, output) examples.

Like LoraHub does for LoRA modules, but for Mamba states: the objective is the mean negative
log-likelihood of the expected outputs when the model starts from the mixed state and reads the
rendered query (teacher-forced, no gradients), and the search over weights is gradient-free.

    examples = load_examples("task.jsonl")                 # {"input": ..., "output": ...} per line
    result = compose(model, {"a": state_a, "b": state_b}, examples, template_skill, budget=60, seed=0)
    result.weights, result.uniform_nll, result.best_nll, result.trace

Weights live on the simplex: w = softmax([0, z_1 .. z_{K-1}]) with z searched by CMA-ES
(:mod:`skillsoup.compose_search`). z = 0 is the uniform mix, the search's start and its first
evaluation, so the result is never worse than uniform on the search examples. A convex mix keeps
the state's scale where the model has seen states; free weights (task arithmetic) can leave it.

``example_nll`` (batched, padded) has a readable twin ``example_nll_ref`` (one example at a time).
:func:`compose_skill` is the registry-level entry point the CLI uses.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from skillsoup.compose_search import cma_es
from skillsoup.errors import MixError, SkillFileError, StateMismatchError
from skillsoup.mixing import CONV_POLICIES, mix
from skillsoup.skill import Demonstration, Skill
from skillsoup.state import SkillState, check_compatible

if TYPE_CHECKING:
    from skillsoup.models.base import StateModel
    from skillsoup.registry import AddResult, SkillRegistry

log = logging.getLogger(__name__)

METHOD = "cma-es/simplex"
DEFAULT_BUDGET = 60
MAX_BUDGET = 10_000
EXAMPLE_KEYS = ("input", "output")


@dataclass(frozen=True)
class TraceStep:
    evaluation: int  # 0 = the uniform mix
    weights: tuple[float, ...]
    nll: float  # mean NLL of the search examples


@dataclass(frozen=True)
class CompositionResult:
    sources: tuple[str, ...]
    weights: tuple[float, ...]  # on the simplex, one per source
    uniform_nll: float  # mean NLL of the search examples under the uniform mix
    best_nll: float  # ... under the weights found
    uniform_holdout_nll: float | None  # the same on the held-out examples (None without any)
    best_holdout_nll: float | None
    n_search: int
    n_holdout: int
    budget: int
    seed: int
    conv: str
    trace: tuple[TraceStep, ...] = field(repr=False)  # every evaluation, in order
    method: str = METHOD

    @property
    def evaluations(self) -> int:
        return len(self.trace)


# ---- examples ------------------------------------------------------------------------------------
def load_examples(path: str | Path, template: str | None = None) -> list[Demonstration]:
    """(input, output) pairs from a JSONL file, one ``{"input": ..., "output": ...}`` object a line.
    Checked like skill files (file:line in every message); given ``template``, outputs that contain
    its stop string are refused (they could never be generated whole)."""
    from skillsoup.skill import DEFAULT_TEMPLATE
    from skillsoup.skillfiles_jsonl import _parse_line
    from skillsoup.skillfiles_rules import MAX_FILE_BYTES, Located, SkillDraft, Where, build_skill, check_keys, file_error

    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise file_error(str(path), None, f"the file is over {MAX_FILE_BYTES // 2**20} MiB; use fewer examples")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SkillFileError(f"examples file {path} does not exist; pass a JSONL file with --examples") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SkillFileError(f"cannot read examples file {path}: {exc}; it must be UTF-8 JSONL") from None
    where0 = Where(1)
    draft = SkillDraft(str(path), where0, {"name": Located("examples", where0), "description": Located("examples", where0),
                                           "template": Located(template or DEFAULT_TEMPLATE, where0)})
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        record, where = _parse_line(str(path), number, line), Where(number)
        check_keys(str(path), {key: where for key in record}, EXAMPLE_KEYS, "an example line")
        for key in EXAMPLE_KEYS:
            if key not in record:
                raise file_error(str(path), where, f"this line has no '{key}'; write one object per line like "
                                                   '{"input": "...", "output": "..."}')
        draft.add_pair(Located(record["input"], where), Located(record["output"], where), where, False)
    if not draft.demonstrations:
        raise file_error(str(path), None, 'no examples found; write one {"input": "...", "output": "..."} per line')
    return list(build_skill(draft).demonstrations)


def split_examples(examples: Sequence[Demonstration], holdout: float, seed: int) -> tuple[list, list]:
    """(search, held-out): a seeded shuffle, ``floor(holdout * n)`` held out, at least one searched."""
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 <= holdout < 1:
        raise MixError(f"--holdout must be a fraction in [0, 1), got {holdout!r}")
    order = list(range(len(examples)))
    random.Random(f"compose-split:{seed}").shuffle(order)
    n_hold = int(math.floor(holdout * len(examples)))
    held = [examples[i] for i in sorted(order[:n_hold])]
    return [examples[i] for i in sorted(order[n_hold:])], held


# ---- the objective -------------------------------------------------------------------------------
def _encode_examples(model: StateModel, template: Skill, examples: Sequence[Demonstration]) -> list[tuple[list[int], list[int]]]:
    """Per example (query ids, answer ids): the query as the runtime renders it, then what the model
    must write after it (the label's space, the output, the text that ends it). Encoded apart, as
    the runtime encodes the prompt and then generates."""
    head, tail = template.template.split("{output}", 1)
    gap = head[len(head.rstrip(" \t")):]
    out = []
    for ex in examples:
        query, answer = model.encode(template.render_query(ex.input)), model.encode(gap + ex.output + tail)
        if not query or not answer:
            raise MixError(f"example {ex.input[:30]!r} encodes to no tokens; give a non-empty input and output")
        out.append((query, answer))
    return out


def example_nll(model: StateModel, state: SkillState, template: Skill, examples: Sequence[Demonstration],
                batch_size: int = 16) -> float:
    """Mean over examples of the per-token NLL of each answer, starting from ``state`` (one row).
    Batched: right-padded rows (a causal model never reads the padding before the answer ends)."""
    encoded = _encode_examples(model, template, examples)
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            seqs = [q + a for q, a in chunk]
            length = max(len(s) for s in seqs) - 1  # the last token is only a target
            ids = torch.zeros(len(seqs), length, dtype=torch.long)
            targets = torch.zeros(len(seqs), length, dtype=torch.long)
            mask = torch.zeros(len(seqs), length)
            for r, ((q, a), s) in enumerate(zip(chunk, seqs)):
                ids[r, : len(s) - 1] = torch.tensor(s[:-1])
                targets[r, : len(s) - 1] = torch.tensor(s[1:])
                mask[r, len(q) - 1 : len(s) - 1] = 1.0 / len(a)  # the answer's tokens, averaged per example
            logits, _ = model.forward(ids, state.expand(len(seqs)) if state.batch_size == 1 else state)
            logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.to(logits.device)[..., None])[..., 0]
            total += float(-(logp * mask.to(logp.device)).sum())
    return total / len(encoded)


def example_nll_ref(model: StateModel, state: SkillState, template: Skill, examples: Sequence[Demonstration],
                    batch_size: int = 16) -> float:
    """Specification of :func:`example_nll`: one example at a time, no padding (``batch_size`` unused)."""
    nlls = []
    with torch.no_grad():
        for query, answer in _encode_examples(model, template, examples):
            logits, _ = model.forward(query + answer[:-1], state)
            logp = torch.log_softmax(logits[0, len(query) - 1 :], dim=-1)
            nlls.append(-sum(float(logp[i, t]) for i, t in enumerate(answer)) / len(answer))
    return sum(nlls) / len(nlls)


def simplex_weights(z: Sequence[float]) -> tuple[float, ...]:
    """softmax([0, *z]): K-1 free numbers -> K positive weights summing to 1 (z = 0: uniform)."""
    logits = np.concatenate([[0.0], np.asarray(z, dtype=np.float64)])
    e = np.exp(logits - logits.max())
    return tuple(float(v) for v in e / e.sum())


# ---- the search ----------------------------------------------------------------------------------
def _check_sources(model: StateModel, sources: Mapping[str, SkillState]) -> tuple[list[str], list[SkillState]]:
    names, states = list(sources), list(sources.values())
    if len(names) < 2:
        raise MixError(f"compose needs at least 2 source skills, got {len(names)}; list them with --from A,B")
    for name, state in zip(names, states):
        if state.batch_size != 1:
            raise StateMismatchError(f"the state of {name!r} has {state.batch_size} rows; compose mixes one-row states")
        model.check_state(state, source=f"the state of {name!r}")
        check_compatible(states[0], state)
    return names, states


def _check_budget(budget) -> None:
    if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= MAX_BUDGET:
        raise MixError(f"--budget must be a whole number of evaluations from 1 to {MAX_BUDGET}, got {budget!r}")


def compose(model: StateModel, sources: Mapping[str, SkillState], examples: Sequence[Demonstration], template: Skill,
            *, budget: int = DEFAULT_BUDGET, seed: int = 0, holdout: float = 0.0, conv: str = "mix",
            batch_size: int = 16, sigma0: float = 1.0) -> CompositionResult:
    """Search simplex weights for ``sources`` (name -> one-row state) that minimise the mean NLL of
    the search part of ``examples``; report the uniform and found mixes on both parts."""
    names, states = _check_sources(model, sources)
    if conv not in CONV_POLICIES:
        raise MixError(f"conv policy must be one of {CONV_POLICIES}, got {conv!r}")
    _check_budget(budget)
    if not examples:
        raise MixError("compose needs at least one example")
    search, held = split_examples(examples, holdout, seed)

    def nll(weights, part) -> float:
        return example_nll(model, mix(states, weights, conv=conv), template, part, batch_size)

    def objective(z: np.ndarray) -> float:
        return nll(simplex_weights(z), search)

    found = cma_es(objective, dim=len(names) - 1, budget=budget, seed=seed, sigma0=sigma0)
    uniform = simplex_weights(np.zeros(len(names) - 1))
    trace = tuple(TraceStep(s.evaluation, simplex_weights(s.x), s.value) for s in found.trace)
    best = simplex_weights(found.best_x)
    result = CompositionResult(
        sources=tuple(names), weights=best, uniform_nll=trace[0].nll, best_nll=found.best_value,
        uniform_holdout_nll=nll(uniform, held) if held else None, best_holdout_nll=nll(best, held) if held else None,
        n_search=len(search), n_holdout=len(held), budget=budget, seed=seed, conv=conv, trace=trace,
    )
    log.info("compose %s: NLL %.4f (uniform) -> %.4f with weights %s after %d evaluations", ",".join(names),
             result.uniform_nll, result.best_nll, [round(w, 4) for w in best], result.evaluations)
    return result


# ---- into the registry ---------------------------------------------------------------------------
def compose_skill(registry: SkillRegistry, model: StateModel, name: str, source_names: Sequence[str],
                  examples: Sequence[Demonstration], *, template: str | None = None, description: str | None = None,
                  budget: int = DEFAULT_BUDGET, seed: int = 0, holdout: float = 0.0, conv: str = "mix",
                  replace: bool = False) -> tuple[CompositionResult, AddResult]:
    """Run :func:`compose` on registry skills and save the result as the composite skill ``name``:
    the search examples as its demonstrations (for routing), the held-out ones as its tests, its
    recipe in the index and the mixed state in the store (see :mod:`skillsoup.registry.composite`)."""
    from skillsoup.registry.composite import Recipe, RecipePart, check_composite_name

    check_composite_name(name, registry, replace)
    source_names = [s.strip() for s in source_names if s.strip()]
    if len(set(source_names)) != len(source_names):
        raise MixError(f"a source skill is listed twice in {source_names}; give each once")
    if name in source_names:
        raise MixError(f"composite {name!r} cannot be one of its own sources; choose another name")
    if len(source_names) < 2:
        raise MixError(f"compose needs at least 2 source skills, got {len(source_names)}; list them with --from A,B")
    _check_budget(budget)
    search, held = split_examples(examples, holdout, seed)  # checks holdout before any work
    skills = [registry.get(n) for n in source_names]  # SkillNotFoundError names the missing one
    chosen = template if template is not None else skills[0].template
    template_skill = _template_skill(chosen, examples)
    rows = {n: registry.info(n) for n in source_names}  # the versions whose states are searched
    states = {n: registry.state(n, model) for n in source_names}
    result = compose(model, states, examples, template_skill, budget=budget, seed=seed, holdout=holdout, conv=conv)
    recipe = Recipe(
        parts=tuple(RecipePart(n, rows[n].content_hash, rows[n].state_hash, w) for n, w in zip(source_names, result.weights)),
        conv=conv, method=result.method, model=model.fingerprint, n_examples=result.n_search, n_holdout=result.n_holdout,
        budget=budget, seed=seed, nll_uniform=result.uniform_nll, nll_best=result.best_nll,
        nll_uniform_holdout=result.uniform_holdout_nll, nll_best_holdout=result.best_holdout_nll,
    )
    text = description or "Composite of " + " and ".join(f"{s.name} ({w:.2f})" for s, w in zip(skills, result.weights)) \
        + ": " + " / ".join(s.description for s in skills)
    skill = Skill(name=name, description=text[:2000], demonstrations=tuple(search), template=chosen,
                  tags=("composite",), tests=tuple(held), source="compose")
    added = registry.add_composite(skill, recipe, model, replace=replace)
    return result, added


def _template_skill(template: str, examples: Sequence[Demonstration]) -> Skill:
    """The template checked as skill files check theirs (placeholders, stop strings vs outputs)."""
    from skillsoup.skillfiles_rules import Located, SkillDraft, Where, build_skill

    where = Where(1)
    draft = SkillDraft("--template", where, {"name": Located("composite", where),
                                             "description": Located("template", where), "template": Located(template, where)})
    for ex in examples:
        draft.add_pair(Located(ex.input, where), Located(ex.output, where), where, False)
    try:
        return build_skill(draft)
    except SkillFileError as exc:
        raise MixError(str(exc).removeprefix("--template:1: ")) from None
