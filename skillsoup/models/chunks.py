"""Reading text in chunks for decay mixing: each chunk's state with its per-layer log-decay.

The conv at chunk boundaries: in one pass, the first k-1 tokens of chunk i see the last layer
inputs of chunk i-1 through the conv. ``context="previous"`` starts chunk i from the conv state
chunk i-1 ended in (and a zero SSM state). Layer 0's conv inputs depend only on the tokens, so
for a one-layer model the composition (:func:`skillsoup.states.decay.mix_decay`) is exact. Deeper
layers read inputs computed by lower layers, which in one pass saw the whole history and here saw
one chunk: the composition is approximate there, and :func:`decay_gap` measures by how much.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from skillsoup.errors import MixError
from skillsoup.states.decay import ChunkState, mix_decay
from skillsoup.states.state import SkillState, relative_error

if TYPE_CHECKING:
    from skillsoup.models.base import StateModel

log = logging.getLogger(__name__)

CONTEXTS = ("previous", "none")


def capture_chunks(
    model: StateModel, chunks: Sequence[str | Sequence[int]], context: str = "previous",
    start: SkillState | None = None,
) -> list[ChunkState]:
    """Read ``chunks`` in order and return one :class:`ChunkState` per chunk, for
    :func:`skillsoup.states.decay.mix_decay`.

    chunks   texts (encoded with the model's tokenizer, no special tokens) or token-id lists
             ([l] or [b, l]); each must hold at least one token.
    context  "previous" (default): chunk i starts from the conv state chunk i-1 ended in and a zero
             SSM state. Then ``mix_decay(capture_chunks(model, chunks, start=s))`` equals
             ``model.capture(concatenated ids, s)`` exactly for a one-layer model and
             approximately for deeper ones (see :func:`decay_gap`).
             "none": every chunk starts from the empty state, so chunks are independent of each
             other (reusable in any order); inexact at each chunk's first k-1 tokens.
    start    the state before the first chunk, read whole (conv and SSM) by the first chunk only;
             pass ``model.neutral_state()`` to match skill states, which start with BOS.
             None = the empty state.

    Raises MixError for no chunks, an empty chunk or an unknown context.
    """
    if context not in CONTEXTS:
        raise MixError(f"context must be one of {CONTEXTS}, got {context!r}")
    if isinstance(chunks, str) or not chunks:
        raise MixError("capture_chunks needs a non-empty list of chunks (texts or token-id lists)")
    out: list[ChunkState] = []
    for k, chunk in enumerate(chunks):
        ids = model.as_ids(chunk)
        if ids.shape[-1] == 0:
            raise MixError(f"chunk {k} holds no tokens; drop it or give it some text")
        if k == 0:
            begin = start
        else:
            begin = model.empty_state(ids.shape[0])
            if context == "previous":  # the conv window continues across the boundary, the SSM restarts
                begin.section("conv").copy_(out[-1].state.section("conv"))
        state, log_decay = model.capture_with_decay(ids, begin)
        out.append(ChunkState(state, log_decay))
    log.debug("captured %d chunks (%s context), %s tokens", len(out), context, sum(c.n_tokens[0] for c in out))
    return out


def chunk_ids(model: StateModel, chunks: Sequence[str | Sequence[int]]) -> torch.Tensor:
    """The chunks' ids concatenated [b, l]: the one pass that decay mixing approximates (texts are
    encoded one by one, as :func:`capture_chunks` encodes them)."""
    return torch.cat([model.as_ids(c) for c in chunks], dim=-1)


@dataclass
class DecayGap:
    """How far decay-composed chunks are from one pass over their concatenation."""

    ssm_rel_error: list[float]  # per layer ||composed - one pass|| / ||one pass||
    conv_rel_error: list[float]  # per layer, same for the conv state
    max_logit_diff: float  # max |logit difference| at the probe's last token
    logit_scale: float  # max |logit| of the one pass there, to read the difference against


def decay_gap(
    model: StateModel, chunks: Sequence[str | Sequence[int]], probe: str | Sequence[int],
    context: str = "previous", start: SkillState | None = None,
) -> DecayGap:
    """Compose ``chunks`` with ``mix_decay`` and compare with one pass over their concatenation
    from ``start``: per-layer relative state errors, and the next-token logits after reading
    ``probe`` (text or ids, e.g. a rendered query) from each state."""
    composed = mix_decay(capture_chunks(model, chunks, context=context, start=start))
    one_pass = model.capture(chunk_ids(model, chunks), start)
    got = model.forward(probe, composed, logits="last")[0]
    want = model.forward(probe, one_pass, logits="last")[0]
    return DecayGap(
        ssm_rel_error=[relative_error(a, b) for a, b in zip(composed.ssm, one_pass.ssm)],
        conv_rel_error=[relative_error(a, b) for a, b in zip(composed.conv, one_pass.conv)],
        max_logit_diff=float((got - want).abs().max()),
        logit_scale=float(want.abs().max()),
    )
