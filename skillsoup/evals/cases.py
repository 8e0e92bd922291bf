"""Scoring one batch of prompts: greedy answers (with stop strings) and the teacher-forced negative
log-likelihood of the expected continuation, each from its own start state.

``score_cases`` is the fast path: rows of equal length share one ``model.forward``, all rows decode
together with ``model.step``, and the NLL continues from the state the prefill left (the prompt is
read once). ``score_cases_ref`` beside it is the specification with the same signature: one
``StateModel.generate`` per row and one forward over prompt + target for the NLL.

A case's ids are ``encode(demonstrations) + encode(query)`` (``prompt_ids``), the tokens the state
path reads in two pieces. The target is what the model should write after the query: the text of
the rendered demonstration after ``render_query``, i.e. the space after the label, the output and
the template's end (so the NLL also measures knowing where to stop).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from skillsoup.errors import GenerationError
from skillsoup.models.generation import StopDecoder
from skillsoup.models.scoring import check_rows, forced_nll_ref, prefill, target_nll
from skillsoup.skills.skill import Demonstration, Skill
from skillsoup.states.state import SkillState


def prompt_ids(model, skill: Skill, query: str, demos_k: int = 0) -> list[int]:
    """encode(first k demonstrations) + encode(query): the same tokens the state path reads in two pieces."""
    demos = model.encode(skill.render_demonstrations(demos_k)) if demos_k else []
    return demos + model.encode(skill.render_query(query))


def target_text(skill: Skill, query: str, output: str) -> str:
    """What the model should write after ``render_query(query)``."""
    full = skill.render_demonstration(Demonstration(query, output))
    head = skill.render_query(query)
    if not full.startswith(head):  # a template whose query part is not a prefix of its demonstration
        raise GenerationError(f"skill {skill.name!r}: its template does not render the query as a prefix of a demonstration")
    return full[len(head):]


@dataclass
class Case:
    """One prompt to score: ids read from ``state`` (None = start of text)."""

    ids: list[int]
    target: list[int]  # expected continuation, teacher-forced for the NLL
    stop: list[str]
    state: SkillState | None = None


@dataclass
class CaseResult:
    answer: str  # greedy, cut before the first stop string, stripped
    nll: float  # mean negative log-likelihood per target token (nats)
    n_target: int = field(default=0)


def make_case(model, skill: Skill, query: str, output: str, demos_k: int = 0, state: SkillState | None = None) -> Case:
    return Case(prompt_ids(model, skill, query, demos_k), model.encode(target_text(skill, query, output)),
                skill.stop_strings(), state)


def score_cases(model, cases: Sequence[Case], max_new_tokens: int = 64) -> list[CaseResult]:
    """Greedy answers and target NLLs of ``cases`` (fast path; see ``score_cases_ref``): the prompts
    are read once (:func:`skillsoup.models.scoring.prefill`), the NLL and the decoding continue
    from there."""
    prompts, targets, states = [c.ids for c in cases], [c.target for c in cases], [c.state for c in cases]
    check_rows(prompts, targets, states)
    if not cases:
        return []
    with torch.no_grad():
        prefilled = prefill(model, prompts, states)
        nlls = target_nll(model, prefilled, targets)
    answers = _greedy(model, cases, torch.stack([p[0] for p in prefilled]),
                      SkillState.cat([p[1] for p in prefilled]), max_new_tokens)
    return [CaseResult(a, n, len(c.target)) for a, n, c in zip(answers, nlls, cases)]


def _greedy(model, cases: Sequence[Case], logits: torch.Tensor, state: SkillState, max_new_tokens: int) -> list[str]:
    """All rows decode together; per row this is ``generate_text`` with temperature 0."""
    eos = getattr(model.tokenizer, "eos_token_id", None) if model.tokenizer is not None else None
    decoders = [StopDecoder(model, c.stop) for c in cases]
    texts = [""] * len(cases)
    done = [max_new_tokens == 0] * len(cases)
    for i in range(max_new_tokens):
        next_ids = logits.argmax(-1)
        for r, token in enumerate(next_ids.tolist()):
            if done[r]:
                continue
            if token == eos:
                done[r] = True
                texts[r] += decoders[r].finish()
                continue
            piece, done[r] = decoders[r].push(token)
            texts[r] += piece
        if all(done):
            break
        if i + 1 < max_new_tokens:
            logits, state = model.step(next_ids, state)
    for r in range(len(cases)):  # out of tokens before a stop string: what is held back counts
        if not done[r]:
            texts[r] += decoders[r].finish()
    return [t.strip() for t in texts]


def score_cases_ref(model, cases: Sequence[Case], max_new_tokens: int = 64) -> list[CaseResult]:
    """Specification of :func:`score_cases`: ``StateModel.generate`` one row at a time, and the NLL
    from :func:`skillsoup.models.scoring.forced_nll_ref` (one forward over prompt + target)."""
    nlls = forced_nll_ref(model, [c.ids for c in cases], [c.target for c in cases], [c.state for c in cases])
    out = []
    for c, nll in zip(cases, nlls):
        answer = "".join(model.generate(c.ids, c.state, stop=c.stop, max_new_tokens=max_new_tokens)).strip()
        out.append(CaseResult(answer, nll, len(c.target)))
    return out
