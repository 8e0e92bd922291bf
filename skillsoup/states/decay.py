"""Decay mixing: composing chunk states as if the chunks were read one after another (State Soup,
arXiv 2406.08423: sequential composition).

One selective-SSM layer runs the linear recurrence h_t = a_t * h_{t-1} + b_t, so reading chunk 1
then chunk 2 ends in D_2 * h_1 + h_2, where h_i is chunk i's state read from a zero SSM state and
D_2 = prod of a_t over chunk 2 = exp(A * sum dt) (per channel and state dim in Mamba-1, per head
in Mamba-2). A :class:`ChunkState` keeps a chunk's state with its per-layer log D (made by
:func:`skillsoup.models.chunks.capture_chunks`); :func:`mix_decay` composes them, and
:func:`mix_decay_ref` beside it is the recurrence written out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from skillsoup.errors import MixError, StateMismatchError
from skillsoup.states.mixing import check_weights
from skillsoup.states.state import SkillState, check_compatible


@dataclass
class ChunkState:
    """A chunk's state and its total decay.

    ``state.ssm[i]`` is what the chunk wrote into layer i starting from a zero SSM state (the first
    chunk: from the ``start`` state it was read from). ``log_decay[i]`` = A * sum(dt) over the
    chunk, float32, <= 0, broadcastable against ``state.ssm[i]``: [b, d, n] (Mamba-1) or
    [b, h, 1, 1] (Mamba-2)."""

    state: SkillState
    log_decay: list[torch.Tensor]

    def __post_init__(self) -> None:
        if self.state.layout.n_recurrent != self.state.num_layers:
            raise MixError(
                f"decay mixing composes recurrent states only; this state has {self.state.layout.describe()} "
                "(attention KV does not decay): use mix(...) for hybrid models"
            )
        if len(self.log_decay) != self.state.num_layers:
            raise MixError(
                f"chunk has {len(self.log_decay)} log-decay tensors for {self.state.num_layers} layers; "
                "capture chunks with skillsoup.models.chunks.capture_chunks"
            )

    @property
    def n_tokens(self) -> list[int]:
        return self.state.n_tokens


def _check_chunks(chunks: Sequence[ChunkState], weights: Sequence[float] | None) -> list[float]:
    if not chunks:
        raise MixError("mix_decay needs at least one chunk; capture them with skillsoup.models.chunks.capture_chunks")
    for k, c in enumerate(chunks):
        if not isinstance(getattr(c, "state", None), SkillState) or not isinstance(getattr(c, "log_decay", None), list):
            raise MixError(f"chunk {k} is a {type(c).__name__}, not a ChunkState; use skillsoup.models.chunks.capture_chunks")
    states = [c.state for c in chunks]
    weights = [1.0] * len(chunks) if weights is None else check_weights(states, weights, normalize=False)
    first = states[0]
    for k, c in enumerate(chunks):
        try:
            check_compatible(first, c.state)
        except StateMismatchError as exc:
            raise MixError(f"chunk {k} cannot be composed with chunk 0: {exc}") from None
        if c.state.batch_size != first.batch_size:
            raise MixError(f"chunk {k} has {c.state.batch_size} rows, chunk 0 has {first.batch_size}")
        for i, (ssm, ld) in enumerate(zip(c.state.ssm, c.log_decay)):
            fits = ld.dim() == ssm.dim() and all(a in (1, b) for a, b in zip(ld.shape, ssm.shape))
            if not fits or ld.shape != chunks[0].log_decay[i].shape:
                raise MixError(
                    f"chunk {k} layer {i}: log-decay shape {tuple(ld.shape)} does not fit ssm {tuple(ssm.shape)}"
                )
    # value checks as one tensor, so a GPU syncs once instead of per chunk and layer
    flags = torch.stack([
        torch.stack([~torch.isfinite(ssm).all() | ~torch.isfinite(ld).all(), (ld > 0).any()])
        for c in chunks for ssm, ld in zip(c.state.ssm, c.log_decay)
    ]).cpu()  # [chunks * layers, 2]
    if bool(flags.any()):
        where, kind = (int(v) for v in flags.nonzero()[0])
        k, i = divmod(where, first.num_layers)
        problem = "holds NaN or infinite values" if kind == 0 else "has a positive log-decay (a growing state)"
        raise MixError(f"chunk {k} layer {i} {problem}; recapture the chunk")
    return weights


def _decay_result(chunks, weights, ssm) -> SkillState:
    last = chunks[-1].state
    n_tokens = [sum(c.state.n_tokens[r] for c in chunks) for r in range(last.batch_size)]
    meta = {"mix": "decay", "decay_weights": ",".join(f"{w:.6g}" for w in weights)}
    return SkillState([t.float().clone() for t in last.conv], ssm, n_tokens, last.fingerprint, last.arch, meta)


def mix_decay(chunks: Sequence[ChunkState], weights: Sequence[float] | None = None) -> SkillState:
    """Compose chunk states as if read one after another -> a new float32 SkillState.

    chunks   ChunkStates in reading order, from :func:`skillsoup.models.chunks.capture_chunks`.
    weights  optional, one per chunk (default 1, never normalised): chunk i contributes
             w_i * (prod_{j>i} D_j) * h_i.
    ssm = sum_i w_i * exp(sum_{j>i} log D_j) * h_i (in log space, so long products underflow to 0
    instead of multiplying many small factors); conv = the last chunk's; n_tokens summed;
    meta["mix"] = "decay". Raises MixError for no chunks, chunks of different models or shapes,
    and NaN / infinite values.
    """
    weights = _check_chunks(chunks, weights)
    ssm = []
    for i in range(chunks[0].state.num_layers):
        h = torch.stack([c.state.ssm[i].float() for c in chunks])  # [K, b, ...]
        log_d = torch.stack([c.log_decay[i].float() for c in chunks])  # [K, b, ...] broadcastable
        after = torch.flip(torch.cumsum(torch.flip(log_d[1:], [0]), 0), [0])  # sum_{j>i} log D_j, i < K-1
        after = torch.cat([after, torch.zeros_like(log_d[:1])])
        w = torch.tensor(weights, dtype=torch.float32, device=h.device).view(-1, *([1] * (h.dim() - 1)))
        ssm.append((w * torch.exp(after) * h).sum(0))
    return _decay_result(chunks, weights, ssm)


def mix_decay_ref(chunks: Sequence[ChunkState], weights: Sequence[float] | None = None) -> SkillState:
    """Specification of :func:`mix_decay`: the recurrence over chunks, H = D_i * H + w_i * h_i."""
    weights = _check_chunks(chunks, weights)
    ssm = []
    for i in range(chunks[0].state.num_layers):
        h = torch.zeros_like(chunks[0].state.ssm[i], dtype=torch.float32)
        for w, c in zip(weights, chunks):
            h = torch.exp(c.log_decay[i].float()) * h + w * c.state.ssm[i].float()
        ssm.append(h)
    return _decay_result(chunks, weights, ssm)
