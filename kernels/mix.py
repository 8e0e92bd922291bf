"""Fused weighted mixing of K same-shaped tensors: the CUDA path of ``skillsoup.states.mixing.mix``.

``mix_states`` computes out = sum_k w_k * x_k in float32, reading each input once and writing the
output once (one pass over memory), whatever K, into ``out`` when given. The kernel receives the K
inputs as a table of raw addresses (the pattern of Triton's grouped-GEMM tutorial), so no stacked
copy is ever made. A SkillState keeps all its fixed-size kinds in one flat buffer
(``SkillState.fixed``), so mixing K whole states is one launch over K flat buffers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from skillsoup_kernels._common import check_device, needs_grad, new_output, on_device

BLOCK = 1024  # elements per program: 4 KiB of float32 output
_TL_DTYPES = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


@triton.jit
def _mix_kernel(
    in_ptrs,  # int64 [T, K]: addresses of the inputs; row t lists the K tensors mixed into output t
    out_ptrs,  # int64 [T]: addresses of the float32 outputs (mix_states launches T = 1)
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


def _launch(tensors: list[torch.Tensor], weights: torch.Tensor, out: torch.Tensor | None) -> torch.Tensor:
    """One launch mixing K same-shaped inputs into one float32 output. The address table (K inputs,
    then the output) is one small host-to-device copy."""
    flat = _same_kind(tensors)
    if out is None:
        out = new_output(flat[0].shape, flat[0].device)
    elif out.shape != flat[0].shape or out.dtype != torch.float32 or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 tensor of shape {tuple(flat[0].shape)}, got "
                         f"{out.dtype} {tuple(out.shape)}")
    numel = flat[0].numel()
    if numel == 0:
        return out
    table = torch.tensor([x.data_ptr() for x in flat] + [out.data_ptr()], dtype=torch.int64).to(weights.device)
    with on_device(weights.device):
        _mix_kernel[(triton.cdiv(numel, BLOCK), 1)](
            table, table[len(flat):], weights, numel, K=len(flat), IN_DTYPE=_TL_DTYPES[flat[0].dtype], BLOCK=BLOCK,
        )
    return out  # the inputs (and copies) live until here; later work is stream-ordered


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


def mix_states(tensors: Sequence[torch.Tensor], weights, out: torch.Tensor | None = None) -> torch.Tensor:
    """sum_k weights[k] * tensors[k] -> a float32 tensor, one pass over memory.

    tensors: K same-shaped tensors [...] (float32, bfloat16 or float16, any strides; inputs that are
    not contiguous are copied first); weights: K numbers or a [K] tensor (not normalised here);
    out: a contiguous float32 tensor of that shape to write into (it may be one of the inputs:
    every element is read from all inputs before it is written), else a new one.
    """
    tensors = list(tensors)
    _check(tensors, weights)
    if needs_grad(*tensors, weights if isinstance(weights, torch.Tensor) else None):
        result = mix_states_ref(tensors, weights)
        return result if out is None else out.copy_(result)
    device = check_device("mix_states", *tensors, out)
    return _launch(tensors, _weight_tensor(weights, device), out)


def mix_states_ref(tensors: Sequence[torch.Tensor], weights, out: torch.Tensor | None = None) -> torch.Tensor:
    """Specification of :func:`mix_states` (mirrors ``_mix_kernel``): a float32 accumulator,
    one input at a time."""
    tensors = list(tensors)
    _check(tensors, weights)
    acc = torch.zeros(tensors[0].shape, dtype=torch.float32, device=tensors[0].device)
    for w, t in zip(weights, tensors):
        acc += w * t.float()
    return acc if out is None else out.copy_(acc)
