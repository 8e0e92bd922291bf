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

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from skillsoup.errors import GenerationError
from skillsoup.models.generation import StopDecoder
from skillsoup.skill import Demonstration, Skill
from skillsoup.state import SkillState


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


def _check(cases: Sequence[Case]) -> None:
    for c in cases:
        if not c.ids or not c.target:
            raise GenerationError("every case needs a non-empty prompt and a non-empty expected output")


def _start_state(model, state: SkillState | None) -> SkillState:
    return model.empty_state(1) if state is None else state


def _forward_grouped(model, ids: list[list[int]], states: list[SkillState], logits: str):
    """``model.forward`` per group of rows with the same length -> per-row (logits, state)."""
    out: list = [None] * len(ids)
    groups: dict[int, list[int]] = {}
    for i, row in enumerate(ids):
        groups.setdefault(len(row), []).append(i)
    for rows in groups.values():
        batch = SkillState.cat([states[i] for i in rows])
        got, new_state = model.forward([ids[i] for i in rows], batch, logits=logits)
        for j, i in enumerate(rows):
            out[i] = (got[j], new_state.rows([j]))
    return out


def _nll(last_logits: torch.Tensor, more_logits: torch.Tensor | None, target: list[int]) -> float:
    """Mean NLL of ``target``: its first token from the prompt's last logits, the rest from
    ``more_logits`` (the logits over target[:-1])."""
    logits = last_logits[None] if more_logits is None else torch.cat([last_logits[None], more_logits])
    logp = torch.log_softmax(logits.double(), dim=-1)
    picked = logp[torch.arange(len(target)), torch.tensor(target, device=logp.device)]
    return float(-picked.mean())


def score_cases(model, cases: Sequence[Case], max_new_tokens: int = 64) -> list[CaseResult]:
    """Greedy answers and target NLLs of ``cases`` (fast path; see ``score_cases_ref``)."""
    _check(cases)
    if not cases:
        return []
    starts = [_start_state(model, c.state) for c in cases]
    prefilled = _forward_grouped(model, [c.ids for c in cases], starts, "last")
    # teacher forcing continues from the prefill's state
    more: list = [None] * len(cases)
    longer = [i for i, c in enumerate(cases) if len(c.target) > 1]
    if longer:
        forced = _forward_grouped(model, [cases[i].target[:-1] for i in longer], [prefilled[i][1] for i in longer], "all")
        for i, (logits, _) in zip(longer, forced):
            more[i] = logits
    nlls = [_nll(prefilled[i][0], more[i], c.target) for i, c in enumerate(cases)]
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
    from one forward over prompt + target with a plain log-softmax."""
    _check(cases)
    out = []
    for c in cases:
        answer = "".join(model.generate(c.ids, c.state, stop=c.stop, max_new_tokens=max_new_tokens)).strip()
        logits, _ = model.forward(c.ids + c.target, c.state, logits="all")
        logp = torch.log_softmax(logits[0].double(), dim=-1)
        start = len(c.ids) - 1  # logits at position t predict token t + 1
        total = sum(-float(logp[start + j, tok]) for j, tok in enumerate(c.target))
        out.append(CaseResult(answer, total / len(c.target), len(c.target)))
    return out


def relative_state_error(state: SkillState, reference: SkillState) -> float:
    """||state - reference|| / ||reference|| over every conv and SSM tensor of every layer."""
    num = den = 0.0
    for a, b in zip(state.conv + state.ssm, reference.conv + reference.ssm):
        num += float((a.double() - b.double()).pow(2).sum())
        den += float(b.double().pow(2).sum())
    return math.sqrt(num) / max(math.sqrt(den), 1e-30)
