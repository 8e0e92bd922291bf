"""One Mamba-2 decode step (Triton): the SSD recurrence for a single token, one scalar decay per head.

    dt = clamp(softplus(dt + dt_bias), dt_limit)     h' = exp(dt * A_h) * h + (dt * x) B
    y = h' C + D_h x

Same signature as ``skillsoup.models.ops.ssd_state_update``: B and C come per head ([b, h, n], the
caller repeats groups), the new state is returned as a new tensor and the input is untouched.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from skillsoup_kernels._common import check_device, needs_grad, new_output, on_device, pow2, softplus

from skillsoup.models import ops


@triton.jit
def _ssd_state_update_kernel(
    h_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, y_ptr, h_out_ptr,
    nh, p, n, rep, dt_min, dt_max,
    s_hb, s_hh, s_hp, s_hn,
    s_xb, s_xh, s_xp,
    s_tb, s_th,
    s_bb, s_bh, s_bn,
    s_cb, s_ch, s_cn,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    hd = tl.program_id(1)  # head
    offs_p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)  # [P]
    offs_n = tl.arange(0, BLOCK_N)  # [N]
    mask_p = offs_p < p
    mask_n = offs_n < n
    mask_pn = mask_p[:, None] & mask_n[None, :]  # [P, N]
    dt = tl.load(dt_ptr + b * s_tb + hd * s_th).to(tl.float32)  # scalar
    if HAS_BIAS:
        dt += tl.load(bias_ptr + hd).to(tl.float32)
    if SOFTPLUS:
        dt = softplus(dt)
    dt = tl.minimum(tl.maximum(dt, dt_min), dt_max)
    decay = tl.exp(dt * tl.load(A_ptr + hd).to(tl.float32))  # scalar
    h = tl.load(h_ptr + b * s_hb + hd * s_hh + offs_p[:, None] * s_hp + offs_n[None, :] * s_hn, mask=mask_pn, other=0.0)
    x = tl.load(x_ptr + b * s_xb + hd * s_xh + offs_p * s_xp, mask=mask_p, other=0.0).to(tl.float32)  # [P]
    grp = hd // rep  # B and C come per head (rep = 1) or per group of rep heads
    Bv = tl.load(B_ptr + b * s_bb + grp * s_bh + offs_n * s_bn, mask=mask_n, other=0.0).to(tl.float32)  # [N]
    Cv = tl.load(C_ptr + b * s_cb + grp * s_ch + offs_n * s_cn, mask=mask_n, other=0.0).to(tl.float32)  # [N]
    h = decay * h.to(tl.float32) + (dt * x)[:, None] * Bv[None, :]  # [P, N]
    y = tl.sum(h * Cv[None, :], axis=1)  # [P]
    if HAS_D:
        y += tl.load(D_ptr + hd).to(tl.float32) * x
    row = b * nh + hd
    tl.store(y_ptr + row * p + offs_p, y.to(y_ptr.dtype.element_ty), mask=mask_p)
    tl.store(h_out_ptr + (row * p + offs_p[:, None]) * n + offs_n[None, :], h, mask=mask_pn)


def ssd_state_update(state, x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf"))):
    """One Mamba-2 decode step (Triton). Same signature as ops.ssd_state_update.

    state [b, h, p, n], x [b, h, p], dt [b, h], A [h], B/C [b, h, n] (per head), D/dt_bias [h]
    -> (y [b, h, p], new state [b, h, p, n]), float32. With autograd recording it runs the ops.py step.
    """
    if needs_grad(state, x, dt, A, B, C, D, dt_bias):
        return ops.ssd_state_update(state, x, dt, A, B, C, D, dt_bias, dt_softplus, dt_limit)
    device = check_device("ssd_state_update", state, x, dt, A, B, C, D, dt_bias)
    if B.shape[1] != state.shape[1] or C.shape[1] != state.shape[1]:
        raise ValueError("ssd_state_update: B/C must be per head [b, h, n]")
    y = new_output(x.shape, device)
    new_state = new_output(state.shape, device)
    _launch(state, x, dt, A, B, C, D, dt_bias, dt_softplus, dt_limit, y, new_state)
    return y, new_state


def ssd_state_update_(state, x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf"))):
    """The step written into ``state`` (contiguous float32, updated in place), B/C per group
    [b, g, n] (head j reads group j // (h / g)) -> y [b, h, p] float32. Same signature as
    ``skillsoup.models.step_ops.ssd_state_update_``: what the decode graphs capture."""
    device = check_device("ssd_state_update_", state, x, dt, A, B, C, D, dt_bias)
    if not state.is_contiguous() or state.dtype != torch.float32:
        raise ValueError("ssd_state_update_: the state must be a contiguous float32 tensor")
    y = new_output(x.shape, device)
    _launch(state, x, dt, A, B, C, D, dt_bias, dt_softplus, dt_limit, y, state)
    return y


def _launch(state, x, dt, A, B, C, D, dt_bias, dt_softplus, dt_limit, y, new_state) -> None:
    """One launch: y and new_state (contiguous) from state; new_state may be state itself."""
    bsz, nh, p, n = state.shape
    g = B.shape[1]
    if (x.shape != (bsz, nh, p) or dt.shape != (bsz, nh) or B.shape != (bsz, g, n) or C.shape != (bsz, g, n)
            or nh % g):
        raise ValueError("ssd_state_update: shapes must be state [b, h, p, n], x [b, h, p], dt [b, h], "
                         "B/C [b, h, n] or [b, g, n] with g dividing h")
    if D is not None and D.shape != (nh,):
        raise ValueError(f"ssd_state_update: D must be per head [{nh}], got {tuple(D.shape)}")
    A = A.contiguous()  # [h], read with stride 1 like D and dt_bias
    D = D.contiguous() if D is not None else None
    dt_bias = dt_bias.contiguous() if dt_bias is not None else None
    block_n = pow2(n)
    block_p = max(1, min(pow2(p), 4096 // block_n, 64))
    grid = (bsz, nh, triton.cdiv(p, block_p))
    with on_device(state.device):
        _ssd_state_update_kernel[grid](
            state, x, dt, A, B, C, D if D is not None else x, dt_bias if dt_bias is not None else x, y, new_state,
            nh, p, n, nh // g, float(dt_limit[0]), float(dt_limit[1]),
            *state.stride(), *x.stride(), *dt.stride(), *B.stride(), *C.stride(),
            HAS_D=D is not None, HAS_BIAS=dt_bias is not None, SOFTPLUS=bool(dt_softplus),
            BLOCK_P=block_p, BLOCK_N=block_n,
        )


def ssd_state_update_ref(state, x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf"))):
    """Specification of :func:`ssd_state_update` (mirrors ``_ssd_state_update_kernel``):
    ``ops.ssd_state_update``, the recurrence written with broadcasting."""
    return ops.ssd_state_update(state, x, dt, A, B, C, D, dt_bias, dt_softplus, dt_limit)
