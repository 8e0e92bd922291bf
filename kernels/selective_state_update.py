"""One Mamba-1 decode step (Triton): the selective-scan recurrence for a single token.

    h' = exp(dt * A) * h + (dt * x) B        y = <h', C> + D x,  y *= silu(z)

Same signature as ``skillsoup.models.ops.selective_state_update``; like it (and unlike mamba-ssm's
kernel, which updates in place) the new state is returned as a new tensor and the input is untouched.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from skillsoup_kernels._common import check_device, needs_grad, new_output, on_device, pow2, silu, softplus

from skillsoup.models import ops


@triton.jit
def _selective_state_update_kernel(
    h_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, y_ptr, h_out_ptr,
    d, n,
    s_hb, s_hd, s_hn,
    s_xb, s_xd,
    s_tb, s_td,
    s_ad, s_an,
    s_bb, s_bn,
    s_cb, s_cn,
    s_zb, s_zd,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # [D]
    offs_n = tl.arange(0, BLOCK_N)  # [N]
    mask_d = offs_d < d
    mask_n = offs_n < n
    mask_dn = mask_d[:, None] & mask_n[None, :]  # [D, N]
    h = tl.load(h_ptr + b * s_hb + offs_d[:, None] * s_hd + offs_n[None, :] * s_hn, mask=mask_dn, other=0.0)
    A = tl.load(A_ptr + offs_d[:, None] * s_ad + offs_n[None, :] * s_an, mask=mask_dn, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + b * s_xb + offs_d * s_xd, mask=mask_d, other=0.0).to(tl.float32)  # [D]
    dt = tl.load(dt_ptr + b * s_tb + offs_d * s_td, mask=mask_d, other=0.0).to(tl.float32)  # [D]
    if HAS_BIAS:
        dt += tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)
    if SOFTPLUS:
        dt = softplus(dt)
    Bv = tl.load(B_ptr + b * s_bb + offs_n * s_bn, mask=mask_n, other=0.0).to(tl.float32)  # [N]
    Cv = tl.load(C_ptr + b * s_cb + offs_n * s_cn, mask=mask_n, other=0.0).to(tl.float32)  # [N]
    h = tl.exp(dt[:, None] * A) * h.to(tl.float32) + (dt * x)[:, None] * Bv[None, :]  # [D, N]
    y = tl.sum(h * Cv[None, :], axis=1)  # [D]
    if HAS_D:
        y += tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32) * x
    if HAS_Z:
        y *= silu(tl.load(z_ptr + b * s_zb + offs_d * s_zd, mask=mask_d, other=0.0).to(tl.float32))
    tl.store(y_ptr + b * d + offs_d, y.to(y_ptr.dtype.element_ty), mask=mask_d)
    tl.store(h_out_ptr + (b * d + offs_d[:, None]) * n + offs_n[None, :], h, mask=mask_dn)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One Mamba-1 decode step (Triton). Same signature as ops.selective_state_update.

    state [b, d, n], x/dt/z [b, d], A [d, n], B/C [b, n], D/dt_bias [d]
    -> (y [b, d], new state [b, d, n]), float32. With autograd recording it runs the ops.py step.
    """
    if needs_grad(state, x, dt, A, B, C, D, z, dt_bias):
        return ops.selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    device = check_device("selective_state_update", state, x, dt, A, B, C, D, z, dt_bias)
    y = new_output(x.shape, device)
    new_state = new_output(state.shape, device)
    _launch(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, y, new_state)
    return y, new_state


def selective_state_update_(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                            out_dtype=torch.float32):
    """The step written into ``state`` (contiguous float32, updated in place: each element is read
    before the same program writes it); y [b, d] in ``out_dtype``. Same signature as
    ``skillsoup.models.step_ops.selective_state_update_``: what the decode graphs capture."""
    device = check_device("selective_state_update_", state, x, dt, A, B, C, D, z, dt_bias)
    if not state.is_contiguous() or state.dtype != torch.float32:
        raise ValueError("selective_state_update_: the state must be a contiguous float32 tensor")
    y = new_output(x.shape, device, out_dtype)
    _launch(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, y, state)
    return y


def _launch(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, y, new_state) -> None:
    """One launch: y and new_state (contiguous) from state; new_state may be state itself."""
    bsz, d, n = state.shape
    if x.shape != (bsz, d) or dt.shape != (bsz, d) or B.shape != (bsz, n) or C.shape != (bsz, n) or A.shape != (d, n):
        raise ValueError("selective_state_update: shapes must be state [b, d, n], x/dt [b, d], A [d, n], B/C [b, n]")
    D = D.contiguous() if D is not None else None  # [d], read with stride 1
    dt_bias = dt_bias.contiguous() if dt_bias is not None else None
    block_n = pow2(n)
    block_d = max(1, min(pow2(d), 4096 // block_n, 64))
    zs = z.stride() if z is not None else (0, 0)
    grid = (bsz, triton.cdiv(d, block_d))
    with on_device(state.device):
        _selective_state_update_kernel[grid](
            state, x, dt, A, B, C, D if D is not None else x, z if z is not None else x,
            dt_bias if dt_bias is not None else x, y, new_state,
            d, n,
            *state.stride(), *x.stride(), *dt.stride(), *A.stride(), *B.stride(), *C.stride(), *zs,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus),
            BLOCK_D=block_d, BLOCK_N=block_n,
        )


def selective_state_update_ref(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """Specification of :func:`selective_state_update` (mirrors ``_selective_state_update_kernel``):
    ``ops.selective_state_update``, the recurrence written with broadcasting."""
    return ops.selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
