"""Fused weighted mixing: of K same-shaped tensors, and of K whole SkillStates across all layers.

``mix_states`` computes out = sum_k w_k * x_k in float32, reading each input once and writing the
output once (one pass over memory), whatever K. The kernel receives the K inputs as a table of raw
addresses (the pattern of Triton's grouped-GEMM tutorial), so no stacked copy is ever made.

``mix_skill_states`` is the fused path of ``skillsoup.states.mixing.mix``: the SSM tensors of every layer
are mixed in one launch, the conv tensors in a second one (a launch mixes T same-sized tensors,
T = layers), instead of one stack + tensordot per layer and kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import triton
import triton.language as tl
from skillsoup_kernels._common import check_device, needs_grad, new_output, on_device

BLOCK = 1024  # elements per program: 4 KiB of float32 output
_TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


@triton.jit
def _mix_kernel(
    in_ptrs,  # int64 [T, K]: addresses of the inputs; row t lists the K tensors mixed into output t
    out_ptrs,  # int64 [T]: addresses of the float32 outputs
    w_ptr,  # float32 [K]
    numel,  # elements per tensor (all T * K inputs have it)
    K: tl.constexpr,
    IN_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,
):
    pid = tl.program_id(0)  # which block of elements
    t = tl.program_id(1)  # which output
    offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)  # [BLOCK]
    mask = offs < numel
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    for k in tl.static_range(K):  # unrolled: the K loads are independent and overlap
        src = tl.load(in_ptrs + t * K + k).to(tl.pointer_type(IN_DTYPE))
        x = tl.load(src + offs, mask=mask, other=0.0)
        acc += tl.load(w_ptr + k) * x.to(tl.float32)
    dst = tl.load(out_ptrs + t).to(tl.pointer_type(tl.float32))
    tl.store(dst + offs, acc, mask=mask)


def _same_kind(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Contiguous inputs of one supported dtype (copies only those that are not)."""
    dtypes = {t.dtype for t in tensors}
    dtype = dtypes.pop() if len(dtypes) == 1 else torch.float32
    dtype = dtype if dtype in _TL_DTYPES else torch.float32
    return [t.to(dtype).contiguous() for t in tensors]


def _launch(batches: list[list[list[torch.Tensor]]], weights: torch.Tensor) -> list[list[torch.Tensor]]:
    """Mix several batches, one launch each. A batch is T groups of K same-shaped inputs (groups[t] ->
    output t); it returns T float32 outputs. All batches share one address table, so a whole mix sends
    two small host-to-device copies (table, weights) whatever the number of layers."""
    plans, addresses = [], []
    for groups in batches:
        flat = _same_kind([x for g in groups for x in g])  # [T * K], row-major by output
        if any(x.shape != flat[0].shape for x in flat):  # the kernel reads numel elements of every input
            shapes = sorted({tuple(x.shape) for x in flat})
            raise ValueError(f"tensors mixed together must share one shape, got {shapes}")
        outs = [new_output(flat[0].shape, flat[0].device) for _ in groups]
        plans.append((flat, outs, len(addresses)))
        addresses += [x.data_ptr() for x in flat] + [o.data_ptr() for o in outs]
    table = torch.tensor(addresses, dtype=torch.int64).to(weights.device)  # int64 [sum of T * (K + 1)]
    for flat, outs, at in plans:
        n_out, numel = len(outs), flat[0].numel()
        n_in = len(flat) // n_out
        if numel == 0:
            continue
        with on_device(weights.device):
            _mix_kernel[(triton.cdiv(numel, BLOCK), n_out)](
                table[at:], table[at + n_out * n_in :], weights, numel,
                K=n_in, IN_DTYPE=_TL_DTYPES[flat[0].dtype], BLOCK=BLOCK,
            )
    return [outs for _, outs, _ in plans]  # inputs (and copies) live until here; later work is stream-ordered


def _check(tensors: list[torch.Tensor], weights) -> None:
    if not tensors:
        raise ValueError("mix_states needs at least one tensor")
    if len(weights) != len(tensors):
        raise ValueError(f"mix_states got {len(tensors)} tensors but {len(weights)} weights")
    for t in tensors[1:]:
        if t.shape != tensors[0].shape:
            raise ValueError(f"mix_states needs same-shaped tensors, got {tuple(tensors[0].shape)} and "
                             f"{tuple(t.shape)}")


def _weight_tensor(weights, device) -> torch.Tensor:
    return torch.as_tensor(weights, dtype=torch.float32).to(device).reshape(-1).contiguous()  # [K]


def mix_states(tensors: Sequence[torch.Tensor], weights) -> torch.Tensor:
    """sum_k weights[k] * tensors[k] -> a new float32 tensor, one pass over memory.

    tensors: K same-shaped tensors [...] (float32, bfloat16 or float16, any strides; inputs that are
    not contiguous are copied first); weights: K numbers or a [K] tensor (not normalised here).
    """
    tensors = list(tensors)
    _check(tensors, weights)
    if needs_grad(*tensors, weights if isinstance(weights, torch.Tensor) else None):
        return mix_states_ref(tensors, weights)
    device = check_device("mix_states", *tensors)
    return _launch([[tensors]], _weight_tensor(weights, device))[0][0]


def mix_states_ref(tensors: Sequence[torch.Tensor], weights) -> torch.Tensor:
    """Specification of :func:`mix_states` (mirrors ``_mix_kernel``): a float32 accumulator,
    one input at a time."""
    tensors = list(tensors)
    _check(tensors, weights)
    out = torch.zeros(tensors[0].shape, dtype=torch.float32, device=tensors[0].device)
    for w, t in zip(weights, tensors):
        out += w * t.float()
    return out


# ---- whole SkillStates ---------------------------------------------------------------------------
def _plan(states, weights, conv, base, layers):
    if conv not in ("mix", "top"):
        raise ValueError(f"conv policy must be 'mix' or 'top', got {conv!r}")
    weights = [float(w) for w in weights]
    if len(weights) != len(states):
        raise ValueError(f"got {len(states)} states but {len(weights)} weights")
    top = max(range(len(weights)), key=weights.__getitem__)  # first largest, as skillsoup.states.mixing does
    n_layers = states[0].num_layers
    chosen = list(range(n_layers)) if layers is None else sorted(set(layers))
    return weights, top, chosen


def mix_skill_states(
    states, weights: Sequence[float], conv: str = "mix", base=None, layers: Iterable[int] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Mix K SkillStates of one model layer by layer -> (conv per layer, ssm per layer), float32.

    The fused path of ``skillsoup.states.mixing.mix``, which validates (and normalises) the weights and
    builds the SkillState from this result. Same policies: ``conv`` "mix" or "top" (keep the conv
    state of the highest-weighted state); ``base`` for task arithmetic, base + sum_k w_k (s_k - base),
    computed as the mix of K+1 tensors with the base weighted 1 - sum_k w_k; ``layers`` to mix only
    those (the others come whole from the top state). At most two kernel launches for all layers.
    """
    weights, top, chosen = _plan(states, weights, conv, base, layers)
    sources = list(states) + ([base] if base is not None else [])
    coeffs = weights + ([1.0 - sum(weights)] if base is not None else [])
    kinds = ["ssm", "conv"] if conv == "mix" else ["ssm"]
    batches = [[[getattr(s, kind)[i] for s in sources] for i in chosen] for kind in kinds]  # [kind][T][K(+1)]
    flat = [x for batch in batches for g in batch for x in g]
    if not flat:
        mixed = [[] for _ in kinds]
    elif needs_grad(*flat):
        mixed = [[mix_states_ref(g, coeffs) for g in batch] for batch in batches]
    else:
        mixed = _launch(batches, _weight_tensor(coeffs, check_device("mix_skill_states", *flat)))
    out = {"conv": [None] * states[0].num_layers, "ssm": [None] * states[0].num_layers}
    for kind, outs in zip(kinds, mixed):
        for i, m in zip(chosen, outs):
            out[kind][i] = m
    for kind in ("conv", "ssm"):  # layers and kinds not mixed: copied from the top state
        top_layers = getattr(states[top], kind)
        out[kind] = [m if m is not None else top_layers[i].float().clone() for i, m in enumerate(out[kind])]
    return out["conv"], out["ssm"]


def mix_skill_states_ref(
    states, weights: Sequence[float], conv: str = "mix", base=None, layers: Iterable[int] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Specification of :func:`mix_skill_states`: one layer and one state at a time, task arithmetic
    written as base + sum_k w_k (s_k - base) (the form skillsoup.states.mixing.mix_ref uses)."""
    weights, top, chosen = _plan(states, weights, conv, base, layers)

    def combine(tensors, origin):
        if origin is None:
            return mix_states_ref(tensors, weights)
        return origin.float() + mix_states_ref([t.float() - origin.float() for t in tensors], weights)

    conv_out, ssm_out = [], []
    for i in range(states[0].num_layers):
        mixed = i in chosen
        ssm_out.append(
            combine([s.ssm[i] for s in states], base.ssm[i] if base is not None else None)
            if mixed else states[top].ssm[i].float().clone()
        )
        conv_out.append(
            combine([s.conv[i] for s in states], base.conv[i] if base is not None else None)
            if mixed and conv == "mix" else states[top].conv[i].float().clone()
        )
    return conv_out, ssm_out
