"""Linear mixing of skill states (State Soup, arXiv 2406.08423), for recurrent and hybrid models.

``mix`` is the path the runtime uses; ``mix_ref`` beside it is the readable specification with the
same signature. The fixed-size kinds of a state (conv windows, recurrent states) live in one flat
buffer per state, so ``mix`` computes them as one weighted sum over K flat buffers: one launch of
the Triton kernel ``skillsoup_kernels.mix_states`` on CUDA (one pass over memory), K fused
multiply-adds on CPU, written straight into ``out`` when a preallocated state is given;
``mix_rows`` is the one ``torch.mm`` for a bank holding K states' buffers as rows of one tensor.

Policies:
    conv="mix"    the conv windows are mixed like the recurrent states
    conv="top"    the conv window of the highest-weighted state is kept (it holds the last few
                  inputs, which are not a task vector)
    kv="top"      attention layers keep the KV cache of the highest-weighted state (default)
    kv="concat"   attention layers read the KV of every state with a positive weight, concatenated,
                  with log(weight) added to those tokens' attention scores; one-hot weights give
                  exactly one state's KV. The next position is the longest of those states'.
    base=S        task arithmetic: S + sum_i w_i (s_i - S), with S usually ``model.neutral_state()``
                  (fixed-size kinds only; KV follows ``kv``). Pass normalize=False to add or
                  subtract task vectors with free weights.
    layers=...    only these model layers' fixed-size kinds are mixed; the others come whole from
                  the top state (``parse_layers("0-3,6")`` reads them from a user's text). KV
                  follows ``kv`` on every attention layer.
docs/states.md says what each KV policy costs. Decay mixing (``mix_decay``,
:mod:`skillsoup.states.decay`) composes chunk states sequentially instead.
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
KV_POLICIES = ("top", "concat")
log = logging.getLogger(__name__)


@functools.cache
def _fused_mixer():
    """The Triton one-pass mixer when it imports (chosen once, logged once), else None."""
    try:
        from skillsoup_kernels import mix_states
    except ImportError as exc:
        log.info("fused state mixing unavailable (%s); using torch.mm", exc)
        return None
    log.info("fused state mixing: Triton kernel on CUDA")
    return mix_states


def _use_kernel(device: torch.device) -> bool:
    return device.type == "cuda" and _fused_mixer() is not None


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


def _check(states, weights, conv, kv, normalize, base, layers, out):
    if conv not in CONV_POLICIES:
        raise MixError(f"conv policy must be one of {CONV_POLICIES}, got {conv!r}")
    if kv not in KV_POLICIES:
        raise MixError(f"kv policy must be one of {KV_POLICIES}, got {kv!r}")
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
    if kv == "concat" and states[0].keys is not None and not any(w > 0 for w in weights):
        raise MixError(f"kv='concat' needs a positive weight (it concatenates the KV of positive weights), got {weights}")
    if out is not None:
        _check_out(states, base, out)
    top = max(range(len(weights)), key=lambda i: weights[i])
    return weights, chosen, top


def _check_out(states, base, out) -> None:
    if not isinstance(out, SkillState):
        raise MixError(f"out must be a SkillState (e.g. model.empty_state()), got {type(out).__name__}")
    check_compatible(states[0], out)
    first = states[0]
    if out.batch_size != first.batch_size or out.fixed.dtype != torch.float32 or out.device != first.device:
        raise MixError(f"out must be a float32 state of {first.batch_size} rows on {first.device}, got "
                       f"{out.fixed.dtype} with {out.batch_size} rows on {out.device}")
    for s in list(states) + ([base] if base is not None else []):
        if s.fixed.numel() and s.fixed.data_ptr() == out.fixed.data_ptr():
            raise MixError("out must be a separate state, not one of the states mixed (or the base)")


def _weighted_sum(flats: list[torch.Tensor], coeffs: list[float], out: torch.Tensor) -> torch.Tensor:
    """out = sum_k coeffs[k] * flats[k] over K flat buffers, in one pass (one kernel or one mm)."""
    if not out.numel():
        return out
    if torch.is_grad_enabled() and any(f.requires_grad for f in flats):  # differentiable, then copied
        w = torch.tensor(coeffs, dtype=torch.float32, device=out.device)
        return out.copy_(w @ torch.stack([f.float() for f in flats]))
    if _use_kernel(out.device):
        return _fused_mixer()(flats, coeffs, out=out)
    # CPU: K fused multiply-adds into out. A stacked [K, N] copy for one torch.mm cost 4x more here
    # (benchmarks/bench_mix.py); a bank that already holds the states as rows takes mix_rows.
    torch.mul(flats[0], coeffs[0], out=out)
    for flat, c in zip(flats[1:], coeffs[1:]):
        out.add_(flat, alpha=c)
    return out


def mix(
    states: Sequence[SkillState], weights: Sequence[float], conv: str = "mix", normalize: bool = True,
    base: SkillState | None = None, layers: Sequence[int] | None = None, kv: str = "top",
    out: SkillState | None = None,
) -> SkillState:
    """Weighted combination of states of one model -> a float32 SkillState (``out`` itself when
    given: its flat buffer is written in place and its KV fields rebound). The result's KV
    tensors may share memory with an input's (skillsoup never modifies a state in place)."""
    weights, chosen, top = _check(states, weights, conv, kv, normalize, base, layers, out)
    first, top_state = states[0], states[top]
    sources = list(states) + ([base] if base is not None else [])
    coeffs = weights + ([1.0 - sum(weights)] if base is not None else [])
    fixed = out.fixed if out is not None else torch.empty_like(first.fixed, dtype=torch.float32)
    _weighted_sum([s.fixed for s in sources], coeffs, fixed)
    result = out if out is not None else SkillState.from_flat(first.layout, fixed, first.n_tokens, first.fingerprint,
                                                              first.arch)
    if conv == "top" and first.layout.n_recurrent:
        result.section("conv").copy_(top_state.section("conv"))
    for j, layer in enumerate(first.layout.recurrent_layers):
        if layer not in chosen:  # whole from the top state
            result.conv[j].copy_(top_state.conv[j])
            result.recurrent[j].copy_(top_state.recurrent[j])
    kv_parts, n_tokens = _mixed_kv(states, weights, top, kv)
    return result.rebind(fixed, kv_parts, n_tokens, _meta(first, weights, kv))


def _meta(first: SkillState, weights: list[float], kv: str) -> dict[str, str]:
    meta = {"mix": ",".join(f"{w:.6g}" for w in weights)}
    if first.keys is not None:
        meta["kv"] = kv
    return meta


def _mixed_kv(states, weights, top, kv):
    """(KV tensors, n_tokens) of the mix. Without attention layers n_tokens is the longest read."""
    first = states[0]
    if first.keys is None:
        return None, [max(s.n_tokens[r] for s in states) for r in range(first.batch_size)]
    if kv == "top":
        t = states[top]
        return {"keys": t.keys, "values": t.values, "positions": t.positions, "kv_bias": t.kv_bias}, list(t.n_tokens)
    chosen = [k for k, w in enumerate(weights) if w > 0]
    parts = {
        "keys": torch.cat([states[k].keys for k in chosen], dim=3),
        "values": torch.cat([states[k].values for k in chosen], dim=3),
        "positions": torch.cat([states[k].positions for k in chosen], dim=1),
        "kv_bias": torch.cat([states[k].kv_bias + math.log(weights[k]) for k in chosen], dim=1),
    }
    return parts, [max(states[k].n_tokens[r] for k in chosen) for r in range(first.batch_size)]


def mix_ref(
    states: Sequence[SkillState], weights: Sequence[float], conv: str = "mix", normalize: bool = True,
    base: SkillState | None = None, layers: Sequence[int] | None = None, kv: str = "top",
    out: SkillState | None = None,
) -> SkillState:
    """Specification of :func:`mix`: one layer, one state, one row at a time."""
    weights, chosen, top = _check(states, weights, conv, kv, normalize, base, layers, out)
    first = states[0]

    def combine(tensors, origin):
        acc = torch.zeros_like(tensors[0], dtype=torch.float32) if origin is None else origin.float().clone()
        for wk, t in zip(weights, tensors):
            acc += wk * (t.float() - (origin.float() if origin is not None else 0))
        return acc

    conv_out, rec_out = [], []
    for j, layer in enumerate(first.layout.recurrent_layers):
        mixed_here = layer in chosen
        rec_out.append(combine([s.recurrent[j] for s in states], base.recurrent[j] if base is not None else None)
                       if mixed_here else states[top].recurrent[j].float().clone())
        conv_out.append(combine([s.conv[j] for s in states], base.conv[j] if base is not None else None)
                        if mixed_here and conv == "mix" else states[top].conv[j].float().clone())
    keys = values = positions = bias = None
    n_tokens = [max(s.n_tokens[r] for s in states) for r in range(first.batch_size)]
    if first.keys is not None:
        picked = [top] if kv == "top" else [k for k, w in enumerate(weights) if w > 0]
        keys = [torch.cat([states[k].keys[a].float() for k in picked], dim=2) for a in range(first.layout.n_attention)]
        values = [torch.cat([states[k].values[a].float() for k in picked], dim=2) for a in range(first.layout.n_attention)]
        positions = torch.cat([states[k].positions for k in picked], dim=1)
        shift = [0.0 if kv == "top" else math.log(weights[k]) for k in picked]
        bias = torch.cat([states[k].kv_bias.float() + d for k, d in zip(picked, shift)], dim=1)
        n_tokens = [max(states[k].n_tokens[r] for k in picked) for r in range(first.batch_size)]
    result = SkillState(conv_out, rec_out, n_tokens, first.fingerprint, first.arch, _meta(first, weights, kv),
                        keys=keys, values=values, positions=positions, kv_bias=bias,
                        layer_kinds=first.layout.layer_kinds)
    if out is None:
        return result
    out.fixed.copy_(result.fixed)
    return out.rebind(out.fixed, result._kv(), result.n_tokens, result.meta)


def mix_rows(bank: torch.Tensor, weights: Sequence[float] | torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """sum_k weights[k] * bank[k] for a [K, N] bank of flat buffers (``SkillState.fixed`` of K
    states of one model, stored as rows of one tensor): exactly one ``torch.mm``, into ``out``
    ([N]) when given. For state banks that keep many skills' states side by side."""
    w = torch.as_tensor(weights, dtype=bank.dtype, device=bank.device).reshape(1, -1)
    if w.shape[1] != bank.shape[0]:
        raise MixError(f"got {bank.shape[0]} bank rows but {w.shape[1]} weights")
    if out is None:
        return torch.mm(w, bank)[0]
    torch.mm(w, bank, out=out.view(1, -1))
    return out


# ---- policies and layer ranges from user text ------------------------------------------------------
def parse_policies(text: str, conv: str = "mix", kv: str = "top") -> tuple[str, str]:
    """"top", "conv=top", "kv=concat", "mix kv=concat" -> (conv policy, kv policy); what is not
    named keeps the given value. A bare word is the conv policy. MixError with the forms otherwise."""
    forms = f"use [conv=]{'|'.join(CONV_POLICIES)} and/or kv={'|'.join(KV_POLICIES)}, e.g. 'top kv=concat'"
    chosen = {"conv": conv, "kv": kv}
    for word in text.split():
        key, sep, value = word.partition("=")
        key, value = (key.lower(), value.lower()) if sep else ("conv", key.lower())
        if key not in chosen or value not in (CONV_POLICIES if key == "conv" else KV_POLICIES):
            raise MixError(f"cannot read mixing policy {word!r}; {forms}")
        chosen[key] = value
    return chosen["conv"], chosen["kv"]



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
