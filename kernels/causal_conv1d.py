"""Depthwise causal conv1d continuing from the cached inputs (Triton), returning the new cache.

Conv state convention (Hugging Face's, as in ``skillsoup.models.ops``): ``[b, c, k]``, the last k
inputs. The conv reads the sequence full = cat(state, x) (k + l columns) and
    out[t] = bias + sum_j w[j] * full[t + 1 + j]        (the oldest cached column is never read)
    final_state = full[..., -k:]                          (the last k inputs, cache included if l < k)
causal-conv1d's ``initial_states`` keeps k-1 columns; this kernel does not use it, and the only place
that converts between the two is ``ops.conv_state_to_causal_conv1d``.
"""

from __future__ import annotations

import triton
import triton.language as tl
from skillsoup_kernels._common import check_device, needs_grad, new_output, on_device, pow2, silu

from skillsoup.models import ops


@triton.jit
def _causal_conv1d_kernel(
    x_ptr, w_ptr, bias_ptr, init_ptr, out_ptr, final_ptr,
    c, l,
    s_xb, s_xc, s_xl,
    s_wc, s_wk,
    s_ib, s_ic, s_ik,
    K: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_INIT: tl.constexpr, SILU: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)  # [C]
    pid_l = tl.program_id(2)
    offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)  # [L]
    mask_c = offs_c < c
    mask_cl = mask_c[:, None] & (offs_l < l)[None, :]  # [C, L]
    x_row = x_ptr + b * s_xb + offs_c[:, None] * s_xc  # [C, 1]
    init_row = init_ptr + b * s_ib + offs_c[:, None] * s_ic  # [C, 1]

    acc = tl.zeros([BLOCK_C, BLOCK_L], dtype=tl.float32)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_c, mask=mask_c, other=0.0).to(tl.float32)[:, None]
    for j in tl.static_range(K):
        w = tl.load(w_ptr + offs_c * s_wc + j * s_wk, mask=mask_c, other=0.0).to(tl.float32)  # [C]
        src = offs_l[None, :] + (j + 1 - K)  # [1, L]: index into x; negative = from the cache
        v = tl.load(x_row + tl.maximum(src, 0) * s_xl, mask=mask_cl & (src >= 0), other=0.0).to(tl.float32)
        if HAS_INIT:
            cached = tl.load(init_row + tl.maximum(src + K, 0) * s_ik, mask=mask_cl & (src < 0), other=0.0)
            v += cached.to(x_ptr.dtype.element_ty).to(tl.float32)  # the cache is cast to x's dtype, as in ops
        acc += w[:, None] * v
    if SILU:
        acc = silu(acc)
    tl.store(out_ptr + (b * c + offs_c[:, None]) * l + offs_l[None, :], acc.to(out_ptr.dtype.element_ty), mask=mask_cl)

    if pid_l == 0:  # one program per channel block writes the new cache: the last K inputs
        for m in tl.static_range(K):  # (names differ from the loop above: Triton keeps one type per name)
            pos = offs_c[:, None] * 0 + (l - K + m)  # [C, 1] index into x; negative = still in the old cache
            last = tl.load(x_row + tl.maximum(pos, 0) * s_xl, mask=mask_c[:, None] & (pos >= 0), other=0.0)
            if HAS_INIT:
                old = tl.load(init_row + tl.maximum(pos + K, 0) * s_ik, mask=mask_c[:, None] & (pos < 0), other=0.0)
                last += old.to(last.dtype)
            final = last.to(final_ptr.dtype.element_ty)
            tl.store(final_ptr + (b * c + offs_c[:, None]) * K + m, final, mask=mask_c[:, None])


def causal_conv1d(x, weight, bias=None, initial_states=None, activation=None):
    """Depthwise causal conv continuing from the last k inputs (Triton). Same signature as
    ops.causal_conv1d.

    x [b, c, l] (any strides), weight [c, k], bias [c], initial_states [b, c, k] (None = start of text)
    -> (out [b, c, l], final_states [b, c, k]), both in x's dtype; the sum is taken in float32.
    With autograd recording it runs ops.causal_conv1d.
    """
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"unsupported conv activation {activation!r}")
    if needs_grad(x, weight, bias, initial_states):
        return ops.causal_conv1d(x, weight, bias, initial_states, activation)
    device = check_device("causal_conv1d", x, weight, bias, initial_states)
    bsz, c, l = x.shape
    k = weight.shape[-1]
    if weight.shape != (c, k) or (initial_states is not None and initial_states.shape != (bsz, c, k)):
        raise ValueError(f"causal_conv1d: x {tuple(x.shape)} needs weight [{c}, k] and initial_states [{bsz}, {c}, k]")
    bias = bias.contiguous() if bias is not None else None  # [c], read with stride 1
    out = new_output((bsz, c, l), device, x.dtype)
    final = new_output((bsz, c, k), device, x.dtype)
    block_c = min(pow2(c), 64)
    block_l = min(pow2(l), 64)
    init_strides = initial_states.stride() if initial_states is not None else (0, 0, 0)
    grid = (bsz, triton.cdiv(c, block_c), max(1, triton.cdiv(l, block_l)))  # l = 0 still writes the cache
    with on_device(device):
        _causal_conv1d_kernel[grid](
            x, weight, bias if bias is not None else weight, initial_states if initial_states is not None else x,
            out, final, c, l,
            *x.stride(), *weight.stride(), *init_strides,
            K=k, HAS_BIAS=bias is not None, HAS_INIT=initial_states is not None,
            SILU=activation is not None, BLOCK_C=block_c, BLOCK_L=block_l,
        )
    return out, final


def causal_conv1d_ref(x, weight, bias=None, initial_states=None, activation=None):
    """Specification of :func:`causal_conv1d` (mirrors ``_causal_conv1d_kernel``): F.conv1d over
    cat(initial_states, x) (``ops.causal_conv1d_ref``)."""
    return ops.causal_conv1d_ref(x, weight, bias, initial_states, activation)
