"""Linear mixing of skill states (State Soup, arXiv 2406.08423).

``mix`` is the path the runtime uses; ``mix_ref`` beside it is the readable specification with the
same signature. A GPU fused kernel with this signature lives in ``skillsoup_kernels.mix_states``.

Policies:
    conv="mix"  the conv states are mixed like the SSM states
    conv="top"  the conv state of the highest-weighted state is kept (it holds the last few
                inputs, which are not a task vector)
    base=S      task arithmetic: S + sum_i w_i (s_i - S), with S usually ``model.neutral_state()``.
                With weights normalised to 1 this equals plain mixing, so pass normalize=False to
                add or subtract task vectors with free weights.
    layers=...  only these layer indices are mixed; the others come whole from the top state
                (``parse_layers("0-3,6")`` reads them from a user's text).

Decay mixing (``mix_decay`` / ``mix_decay_ref``, :mod:`skillsoup.states.decay`) composes chunk
states sequentially instead: sum_i (prod_{j>i} D_j) * h_i, as reading them one after another would.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Sequence

import torch

from skillsoup.errors import MixError
from skillsoup.states.state import SkillState, check_compatible

CONV_POLICIES = ("mix", "top")
log = logging.getLogger(__name__)


@functools.cache
def _fused_mixer():
    """The Triton one-pass mixer when it imports (chosen once, logged once), else None."""
    try:
        from skillsoup_kernels import mix_skill_states
    except ImportError as exc:
        log.info("fused state mixing unavailable (%s); using PyTorch", exc)
        return None
    log.info("fused state mixing: Triton kernel on CUDA")
    return mix_skill_states


def check_weights(states: Sequence[SkillState], weights: Sequence[float], normalize: bool) -> list[float]:
    """Validated weights as floats, normalised to sum 1 when asked."""
    if not states:
        raise MixError("mix needs at least one state")
    weights = [float(w) for w in weights]
    if len(weights) != len(states):
        raise MixError(f"got {len(states)} states but {len(weights)} weights; give one weight per state")
    if not all(math.isfinite(w) for w in weights):
        raise MixError(f"weights must be finite numbers, got {weights}")
    total = sum(weights)
    if normalize:
        if abs(total) < 1e-12:
            raise MixError(f"weights sum to {total:g}; they must have a nonzero sum to be normalised")
        weights = [w / total for w in weights]
    return weights


def _check(states, weights, conv, normalize, base, layers):
    if conv not in CONV_POLICIES:
        raise MixError(f"conv policy must be one of {CONV_POLICIES}, got {conv!r}")
    weights = check_weights(states, weights, normalize)
    for s in list(states[1:]) + ([base] if base is not None else []):
        check_compatible(states[0], s)
    rows = {s.batch_size for s in states} | ({base.batch_size} if base is not None else set())
    if len(rows) != 1:
        raise MixError(f"states to mix must have the same number of rows, got {sorted(rows)}")
    n_layers = states[0].num_layers
    chosen = set(range(n_layers)) if layers is None else set(layers)
    if not chosen or not chosen <= set(range(n_layers)):
        raise MixError(f"layers must be a non-empty subset of 0..{n_layers - 1}, got {sorted(chosen)}")
    top = max(range(len(weights)), key=lambda i: weights[i])
    return weights, chosen, top


def _result(states, weights, top, conv, ssm) -> SkillState:
    first = states[0]
    n_tokens = [max(s.n_tokens[r] for s in states) for r in range(first.batch_size)]
    meta = {"mix": ",".join(f"{w:.6g}" for w in weights)}
    return SkillState(conv, ssm, n_tokens, first.fingerprint, first.arch, meta)


def mix(
    states: Sequence[SkillState], weights: Sequence[float], conv: str = "mix", normalize: bool = True,
    base: SkillState | None = None, layers: Sequence[int] | None = None,
) -> SkillState:
    """Weighted combination of states of one model -> a new float32 SkillState."""
    weights, chosen, top = _check(states, weights, conv, normalize, base, layers)
    if states[0].device.type == "cuda" and (fused := _fused_mixer()) is not None:  # one pass, all layers
        return _result(states, weights, top, *fused(states, weights, conv=conv, base=base, layers=chosen))
    w = torch.tensor(weights, dtype=torch.float32, device=states[0].device)

    def combine(tensors: list[torch.Tensor], origin: torch.Tensor | None) -> torch.Tensor:
        stacked = torch.stack([t.float() for t in tensors])  # [K, ...]
        if origin is None:
            return torch.tensordot(w, stacked, dims=1)
        return origin.float() + torch.tensordot(w, stacked - origin.float(), dims=1)

    ssm, conv_out = [], []
    for i in range(states[0].num_layers):
        if i not in chosen:
            ssm.append(states[top].ssm[i].float().clone())
            conv_out.append(states[top].conv[i].float().clone())
            continue
        ssm.append(combine([s.ssm[i] for s in states], base.ssm[i] if base is not None else None))
        conv_out.append(
            combine([s.conv[i] for s in states], base.conv[i] if base is not None else None)
            if conv == "mix" else states[top].conv[i].float().clone()
        )
    return _result(states, weights, top, conv_out, ssm)


def mix_ref(
    states: Sequence[SkillState], weights: Sequence[float], conv: str = "mix", normalize: bool = True,
    base: SkillState | None = None, layers: Sequence[int] | None = None,
) -> SkillState:
    """Specification of :func:`mix`: one layer, one state at a time."""
    weights, chosen, top = _check(states, weights, conv, normalize, base, layers)

    def combine(tensors, origin):
        out = torch.zeros_like(tensors[0], dtype=torch.float32) if origin is None else origin.float().clone()
        for wk, t in zip(weights, tensors):
            out += wk * (t.float() - (origin.float() if origin is not None else 0))
        return out

    ssm, conv_out = [], []
    for i in range(states[0].num_layers):
        origin_ssm = base.ssm[i] if base is not None else None
        origin_conv = base.conv[i] if base is not None else None
        mixed_here = i in chosen
        ssm.append(combine([s.ssm[i] for s in states], origin_ssm) if mixed_here else states[top].ssm[i].float().clone())
        if mixed_here and conv == "mix":
            conv_out.append(combine([s.conv[i] for s in states], origin_conv))
        else:
            conv_out.append(states[top].conv[i].float().clone())
    return _result(states, weights, top, conv_out, ssm)


# ---- layer ranges from user text ----------------------------------------------------------------
def parse_layers(text: str, num_layers: int | None = None) -> list[int] | None:
    """"all" -> None (every layer, as ``mix(layers=None)``); "0-3,6" -> [0, 1, 2, 3, 6].

    Ranges are inclusive; the result is sorted without repeats. With ``num_layers`` every index is
    checked to lie in 0..num_layers-1. Raises MixError with the accepted forms on bad text.
    """
    forms = 'use "all" or comma-separated indices and inclusive ranges like "0-3,6"'
    if not isinstance(text, str):
        raise MixError(f"layers must be text, got {type(text).__name__}; {forms}")
    cleaned = text.strip().lower()
    if cleaned == "all":
        return None
    chosen: set[int] = set()
    for part in cleaned.split(","):
        part = part.strip()
        lo, sep, hi = part.partition("-")
        lo, hi = lo.strip(), (hi.strip() if sep else lo.strip())
        if not (lo.isascii() and hi.isascii() and lo.isdigit() and hi.isdigit()):
            raise MixError(f"cannot read layers {text!r} (part {part!r}); {forms}")
        a, b = int(lo), int(hi)
        if a > b:
            raise MixError(f"layer range {part!r} runs backwards; write it as {b}-{a}")
        chosen.update(range(a, b + 1))
    if num_layers is not None and max(chosen) >= num_layers:
        raise MixError(f"layers {text!r} name layer {max(chosen)}, the model has layers 0..{num_layers - 1}")
    return sorted(chosen)
