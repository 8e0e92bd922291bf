"""Compose: find mixing weights for a few skills' states from a handful of (input, output) examples.

Like LoraHub does for LoRA modules, but for Mamba states: the objective is the mean negative
log-likelihood of the expected outputs when the model starts from the mixed state and reads the
rendered query (teacher-forced, no gradients), and the search over weights is gradient-free.

    examples = load_examples("task.jsonl")                 # {"input": ..., "output": ...} per line
    result = compose(model, {"a": state_a, "b": state_b}, examples, template_skill, budget=60, seed=0)
    result.weights, result.uniform_nll, result.best_nll, result.trace

Weights live on the simplex: w = softmax([0, z_1 .. z_{K-1}]) with z searched by CMA-ES
(:mod:`skillsoup.compose.search`). z = 0 is the uniform mix, the search's start and its first
evaluation, so the result is never worse than uniform on the search examples. A convex mix keeps
the state's scale where the model has seen states; free weights (task arithmetic) can leave it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from skillsoup.compose.examples import split_examples
from skillsoup.compose.search import cma_es
from skillsoup.errors import MixError, StateMismatchError
from skillsoup.models.scoring import forced_nll
from skillsoup.skills.skill import Demonstration, Skill
from skillsoup.states.mixing import CONV_POLICIES, KV_POLICIES, mix
from skillsoup.states.state import SkillState, check_compatible

if TYPE_CHECKING:
    from skillsoup.models.base import StateModel

log = logging.getLogger(__name__)

METHOD = "cma-es/simplex"
DEFAULT_BUDGET = 60
MAX_BUDGET = 10_000


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
    kv: str = "top"  # the KV policy of hybrid models (docs/states.md)

    @property
    def evaluations(self) -> int:
        return len(self.trace)


def encode_examples(model: StateModel, template: Skill, examples: Sequence[Demonstration]) -> list[tuple[list[int], list[int]]]:
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


def example_nll(model: StateModel, state: SkillState, template: Skill, examples: Sequence[Demonstration]) -> float:
    """Mean over examples of the per-token NLL of each answer after its query, read from ``state``
    (one row); teacher-forced by :func:`skillsoup.models.scoring.forced_nll`."""
    encoded = encode_examples(model, template, examples)
    nlls = forced_nll(model, [q for q, _ in encoded], [a for _, a in encoded], [state] * len(encoded))
    return sum(nlls) / len(nlls)


def simplex_weights(z: Sequence[float]) -> tuple[float, ...]:
    """softmax([0, *z]): K-1 free numbers -> K positive weights summing to 1 (z = 0: uniform)."""
    logits = np.concatenate([[0.0], np.asarray(z, dtype=np.float64)])
    e = np.exp(logits - logits.max())
    return tuple(float(v) for v in e / e.sum())


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


def check_budget(budget) -> None:
    if isinstance(budget, bool) or not isinstance(budget, int) or not 1 <= budget <= MAX_BUDGET:
        raise MixError(f"--budget must be a whole number of evaluations from 1 to {MAX_BUDGET}, got {budget!r}")


def compose(model: StateModel, sources: Mapping[str, SkillState], examples: Sequence[Demonstration], template: Skill,
            *, budget: int = DEFAULT_BUDGET, seed: int = 0, holdout: float = 0.0, conv: str = "mix",
            sigma0: float = 1.0, kv: str = "top") -> CompositionResult:
    """Search simplex weights for ``sources`` (name -> one-row state) that minimise the mean NLL of
    the search part of ``examples``; report the uniform and found mixes on both parts."""
    names, states = _check_sources(model, sources)
    if conv not in CONV_POLICIES:
        raise MixError(f"conv policy must be one of {CONV_POLICIES}, got {conv!r}")
    if kv not in KV_POLICIES:
        raise MixError(f"kv policy must be one of {KV_POLICIES}, got {kv!r}")
    check_budget(budget)
    if not examples:
        raise MixError("compose needs at least one example")
    search, held = split_examples(examples, holdout, seed)

    def nll(weights, part) -> float:
        return example_nll(model, mix(states, weights, conv=conv, kv=kv), template, part)

    def objective(z: np.ndarray) -> float:
        return nll(simplex_weights(z), search)

    found = cma_es(objective, dim=len(names) - 1, budget=budget, seed=seed, sigma0=sigma0)
    uniform = simplex_weights(np.zeros(len(names) - 1))
    trace = tuple(TraceStep(s.evaluation, simplex_weights(s.x), s.value) for s in found.trace)
    best = simplex_weights(found.best_x)
    result = CompositionResult(
        sources=tuple(names), weights=best, uniform_nll=trace[0].nll, best_nll=found.best_value,
        uniform_holdout_nll=nll(uniform, held) if held else None, best_holdout_nll=nll(best, held) if held else None,
        n_search=len(search), n_holdout=len(held), budget=budget, seed=seed, conv=conv, trace=trace, kv=kv,
    )
    log.info("compose %s: NLL %.4f (uniform) -> %.4f with weights %s after %d evaluations", ",".join(names),
             result.uniform_nll, result.best_nll, [round(w, 4) for w in best], result.evaluations)
    return result
