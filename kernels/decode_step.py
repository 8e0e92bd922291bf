"""The fused, in-place pieces of one decode step (Triton): fewer launches per layer, fixed buffers.

A layer's decode step in PyTorch is about 30 small kernels (norm, casts, the conv window's shift,
its dot product, silu, ...). With these it is seven: add_rms_norm, in_proj, conv_step_, x_proj,
dt_proj, the in-place state update (``selective_state_update_`` / ``ssd_state_update_``, in their
own modules) and out_proj. Every op writes into the buffers it is given (the conv window and SSM
state are views of a state's flat buffer), so a CUDA graph can capture the step once and replay it.

The specifications, with the same signatures, are ``skillsoup.models.step_ops`` (the PyTorch ops
of ``mamba1.step`` and ``StackBackend._blocks``); ``*_ref`` below point at them.
"""

from __future__ import annotations

import types

import torch
import triton
import triton.language as tl
from skillsoup_kernels._common import check_device, new_output, on_device, pow2, silu
from skillsoup_kernels.selective_state_update import selective_state_update_
from skillsoup_kernels.ssd_state_update import ssd_state_update_

from skillsoup.models import step_ops

_TL = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


@triton.jit
def _conv_step_kernel(
    state_ptr, x_ptr, w_ptr, bias_ptr, out_ptr,
    c, s_sb, s_sc, s_sk, s_xb, s_xc, s_wc, s_wk,
    K: tl.constexpr, BLOCK_K: tl.constexpr, HAS_BIAS: tl.constexpr, SILU: tl.constexpr, BLOCK_C: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # [C]
    offs_k = tl.arange(0, BLOCK_K)  # [K]
    mask_c = offs_c < c
    mask_ck = mask_c[:, None] & (offs_k < K)[None, :]  # [C, K]
    row = state_ptr + b * s_sb + offs_c[:, None] * s_sc  # [C, 1]
    # the window after the shift: old columns 1..K-1, then x in the last column
    shifted = tl.load(row + (offs_k[None, :] + 1) * s_sk, mask=mask_c[:, None] & (offs_k < K - 1)[None, :], other=0.0)
    x_new = tl.load(x_ptr + b * s_xb + offs_c * s_xc, mask=mask_c, other=0.0).to(tl.float32)  # [C]
    window = tl.where((offs_k == K - 1)[None, :], x_new[:, None], shifted)  # [C, K]
    w = tl.load(w_ptr + offs_c[:, None] * s_wc + offs_k[None, :] * s_wk, mask=mask_ck, other=0.0).to(tl.float32)
    acc = tl.sum(window * w, axis=1)  # [C]
    tl.debug_barrier()  # every thread has read the old window before any writes the new one
    tl.store(row + offs_k[None, :] * s_sk, window, mask=mask_ck)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)
    if SILU:
        acc = silu(acc)
    tl.store(out_ptr + b * c + offs_c, acc.to(out_ptr.dtype.element_ty), mask=mask_c)


def conv_step_(conv_state, x, weight, bias=None, activation="silu"):
    """conv_state [b, c, k] float32 (updated in place), x [b, c], weight [c, k], bias [c] -> the conv
    output [b, c] in x's dtype (silu applied). Same signature as ``step_ops.conv_step_``."""
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"unsupported conv activation {activation!r}")
    device = check_device("conv_step_", conv_state, x, weight, bias)
    bsz, c, k = conv_state.shape
    if x.shape != (bsz, c) or weight.shape != (c, k) or conv_state.dtype != torch.float32:
        raise ValueError(f"conv_step_: conv_state must be float32 [b, c, k], x [b, c], weight [c, k]; got "
                         f"{tuple(conv_state.shape)}, {tuple(x.shape)}, {tuple(weight.shape)}")
    out = new_output((bsz, c), device, x.dtype)
    block_c = min(pow2(c), max(16, 1024 // pow2(k)))
    bias = bias.contiguous() if bias is not None else None
    with on_device(device):
        _conv_step_kernel[(bsz, triton.cdiv(c, block_c))](
            conv_state, x, weight, bias if bias is not None else weight, out,
            c, *conv_state.stride(), *x.stride(), *weight.stride(),
            K=k, BLOCK_K=pow2(k), HAS_BIAS=bias is not None, SILU=activation is not None, BLOCK_C=block_c,
        )
    return out


@triton.jit
def _add_rms_norm_kernel(
    h_ptr, o_ptr, w_ptr, res_ptr, y_ptr, H, eps,
    HAS_OUT: tl.constexpr, NORM_DTYPE: tl.constexpr, BLOCK_H: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK_H)
    mask = offs < H
    h = tl.load(h_ptr + row * H + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_OUT:  # the previous layer's residual add, rounded as the residual's dtype rounds it
        h = h + tl.load(o_ptr + row * H + offs, mask=mask, other=0.0).to(tl.float32)
    h = h.to(res_ptr.dtype.element_ty)
    tl.store(res_ptr + row * H + offs, h, mask=mask)
    x = h.to(NORM_DTYPE).to(tl.float32)  # the norm's input dtype
    var = tl.sum(x * x, axis=0) / H
    xn = (x * tl.div_rn(1.0, tl.sqrt_rn(var + eps))).to(NORM_DTYPE)  # normalised in float32, cast back
    w = tl.load(w_ptr + offs, mask=mask, other=0.0)
    y = w.to(tl.float32) * xn.to(tl.float32)
    tl.store(y_ptr + row * H + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def add_rms_norm(hidden, out, weight, eps, residual_in_fp32=True, cast_input=True):
    """One launch for the residual add and the RMSNorm at a layer's input. Same signature and
    result as ``step_ops.add_rms_norm``: hidden [b, H] (and out [b, H] or None) -> (residual, normed)."""
    device = check_device("add_rms_norm", hidden, out, weight)
    if hidden.dim() != 2 or (out is not None and out.shape != hidden.shape) or weight.shape != hidden.shape[-1:]:
        raise ValueError("add_rms_norm: hidden and out must be [b, H] and the weight [H]")
    summed = hidden.dtype if out is None else torch.promote_types(hidden.dtype, out.dtype)
    res_dtype = torch.float32 if residual_in_fp32 else summed
    norm_dtype = weight.dtype if cast_input else summed
    hidden, out = hidden.contiguous(), out.contiguous() if out is not None else None
    residual = new_output(hidden.shape, device, res_dtype)
    normed = new_output(hidden.shape, device, torch.promote_types(weight.dtype, norm_dtype))
    with on_device(device):
        _add_rms_norm_kernel[(hidden.shape[0],)](
            hidden, out if out is not None else hidden, weight, residual, normed, hidden.shape[1], float(eps),
            HAS_OUT=out is not None, NORM_DTYPE=_TL[norm_dtype], BLOCK_H=pow2(hidden.shape[1]),
        )
    return residual, normed


conv_step_ref = step_ops.conv_step_
add_rms_norm_ref = step_ops.add_rms_norm

decode_ops = types.SimpleNamespace(
    name="triton",
    conv_step_=conv_step_,
    selective_state_update_=selective_state_update_,
    ssd_state_update_=ssd_state_update_,
    add_rms_norm=add_rms_norm,
)
