"""Teacher-forced scoring: the negative log-likelihood of expected continuations, each row read
from its own start state.

``forced_nll`` is the fast path: prompts of equal length share one ``model.forward``, and each
target continues from the state its prompt left (the prompt is read once; no padding, so a
row's state is never touched by another row's tokens). ``forced_nll_ref`` beside it is the
specification with the same signature: one forward over prompt + target per row and a plain
log-softmax. ``prefill`` is exposed for callers that decode from the same prompts afterwards
(``skillsoup.evals``).

Shapes: a prompt and a target are lists of token ids (each non-empty); a state is a one-row
SkillState or None (start of text); logits are [vocab] per row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from skillsoup.errors import GenerationError
from skillsoup.states.state import SkillState

if TYPE_CHECKING:
    from skillsoup.models.base import StateModel


def check_rows(prompts: Sequence[list[int]], targets: Sequence[list[int]], states: Sequence) -> None:
    if not len(prompts) == len(targets) == len(states):
        raise GenerationError(f"got {len(prompts)} prompts, {len(targets)} targets and {len(states)} states; "
                              "give one of each per row")
    if any(not p or not t for p, t in zip(prompts, targets)):
        raise GenerationError("every row needs a non-empty prompt and a non-empty expected output")


def _forward_grouped(model: StateModel, ids: Sequence[list[int]], states: Sequence[SkillState], logits: str):
    """``model.forward`` per group of rows of one length -> per row (logits, one-row state)."""
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


def prefill(model: StateModel, prompts: Sequence[list[int]], states: Sequence[SkillState | None]):
    """Read each prompt from its state -> per row (last logits [vocab], state after the prompt)."""
    starts = [model.empty_state(1) if s is None else s for s in states]
    return _forward_grouped(model, prompts, starts, "last")


def target_nll(model: StateModel, prefilled, targets: Sequence[list[int]]) -> list[float]:
    """Mean NLL per target token (nats) of each target after its prefilled prompt: the first token
    from the prompt's last logits, the rest teacher-forced from the prompt's state."""
    more: list = [None] * len(targets)
    longer = [i for i, t in enumerate(targets) if len(t) > 1]
    if longer:
        forced = _forward_grouped(model, [targets[i][:-1] for i in longer], [prefilled[i][1] for i in longer], "all")
        for i, (logits, _) in zip(longer, forced):
            more[i] = logits
    out = []
    for (last, _), rest, target in zip(prefilled, more, targets):
        logits = last[None] if rest is None else torch.cat([last[None], rest])
        logp = torch.log_softmax(logits.double(), dim=-1)
        out.append(float(-logp[torch.arange(len(target)), torch.tensor(target, device=logp.device)].mean()))
    return out


def forced_nll(model: StateModel, prompts: Sequence[list[int]], targets: Sequence[list[int]],
               states: Sequence[SkillState | None]) -> list[float]:
    """Per row, the mean NLL per token of ``targets[i]`` after reading ``prompts[i]`` from ``states[i]``."""
    check_rows(prompts, targets, states)
    if not prompts:
        return []
    with torch.no_grad():
        return target_nll(model, prefill(model, prompts, states), targets)


def forced_nll_ref(model: StateModel, prompts: Sequence[list[int]], targets: Sequence[list[int]],
                   states: Sequence[SkillState | None]) -> list[float]:
    """Specification of :func:`forced_nll`: one forward over prompt + target per row."""
    check_rows(prompts, targets, states)
    out = []
    for prompt, target, state in zip(prompts, targets, states):
        logits, _ = model.forward(list(prompt) + list(target), state, logits="all")
        logp = torch.log_softmax(logits[0].double(), dim=-1)
        start = len(prompt) - 1  # logits at position t predict token t + 1
        out.append(sum(-float(logp[start + j, tok]) for j, tok in enumerate(target)) / len(target))
    return out
