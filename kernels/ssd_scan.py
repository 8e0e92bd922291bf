"""Mamba-2 prefill from a given state: mamba-ssm's chunked SSD kernels when they import, else our
Triton chunked scan, else (autograd, or off CUDA without the interpreter) ``ops.ssd_scan``.

mamba-ssm's ``mamba_chunk_scan_combined`` accepts ``initial_states`` and returns the final states,
so on CUDA with mamba-ssm installed it is the fast path; it cannot be installed on every machine
(see ENVIRONMENT.md), so ``_ssd_chunk_scan_kernel`` does the same work in one launch per layer.

One program owns one batch row, one head and BLOCK_P of its head dims, and walks the sequence in
chunks of T tokens carrying the [P, N] state, the state-space-duality form of ``ops.ssd_scan``:

    a = dt * A_h, a_cum = cumsum(a) within the chunk
    y_t   = exp(a_cum_t) * C_t . h                                   (the state carried in)
          + sum_{s<=t} exp(a_cum_t - a_cum_s) (C_t . B_s) dt_s x_s   (the chunk's own tokens)
          + D_h x_t
    h    <- exp(a_cum_T) h + sum_s exp(a_cum_T - a_cum_s) dt_s x_s B_s^T

three matrix products per chunk (``tl.dot`` in IEEE float32: exact like the reference, no TF32).
Padded tokens get dt = 0: decay 1, input 0.
"""

from __future__ import annotations

import functools
import logging

import triton
import triton.language as tl
from skillsoup_kernels._common import check_device, interpreting, needs_grad, new_output, on_device, pow2, softplus

from skillsoup.models import ops

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def mamba_chunk_scan():
    """mamba_ssm's ``mamba_chunk_scan_combined``, or None when it does not import. Decided once."""
    try:
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined
    except Exception as exc:  # ImportError, or a broken CUDA extension raising OSError/RuntimeError
        log.info("mamba-ssm not usable (%s: %s); Mamba-2 prefill runs skillsoup's Triton scan", type(exc).__name__, exc)
        return None
    log.info("Mamba-2 prefill uses mamba-ssm's mamba_chunk_scan_combined")
    return mamba_chunk_scan_combined


@triton.jit
def _ssd_chunk_scan_kernel(
    x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, h0_ptr, y_ptr, hT_ptr,
    l, nh, p, n, rep, dt_min, dt_max,
    s_xb, s_xl, s_xh, s_xp,
    s_tb, s_tl, s_th,
    s_bb, s_bl, s_bg, s_bn,
    s_cb, s_cl, s_cg, s_cn,
    s_hb, s_hh, s_hp, s_hn,
    HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr, SOFTPLUS: tl.constexpr,
    T: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    hd = tl.program_id(1)
    offs_p = tl.program_id(2) * BLOCK_P + tl.arange(0, BLOCK_P)  # [P]
    offs_n = tl.arange(0, BLOCK_N)  # [N]
    offs_t = tl.arange(0, T)  # [T]
    mask_p, mask_n = offs_p < p, offs_n < n
    grp = hd // rep  # B and C are shared by the rep heads of a group
    A = tl.load(A_ptr + hd).to(tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + hd).to(tl.float32)
    if HAS_D:
        Dh = tl.load(D_ptr + hd).to(tl.float32)
    mask_pn = mask_p[:, None] & mask_n[None, :]
    if HAS_H0:
        h0 = h0_ptr + b * s_hb + hd * s_hh + offs_p[:, None] * s_hp + offs_n[None, :] * s_hn
        h = tl.load(h0, mask=mask_pn, other=0.0).to(tl.float32)  # [P, N]
    else:
        h = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    causal = offs_t[:, None] >= offs_t[None, :]  # [T, T]: token t reads tokens s <= t
    last = offs_t == T - 1
    for start in range(0, l, T):
        t_idx = start + offs_t
        mask_t = t_idx < l
        dt = tl.load(dt_ptr + b * s_tb + t_idx * s_tl + hd * s_th, mask=mask_t, other=0.0).to(tl.float32)  # [T]
        if HAS_BIAS:
            dt += bias
        if SOFTPLUS:
            dt = softplus(dt)
        dt = tl.minimum(tl.maximum(dt, dt_min), dt_max)
        dt = tl.where(mask_t, dt, 0.0)  # padding: decay 1, input 0
        a_cum = tl.cumsum(dt * A, axis=0)  # [T]
        mask_tp = mask_t[:, None] & mask_p[None, :]
        mask_tn = mask_t[:, None] & mask_n[None, :]
        x = tl.load(x_ptr + b * s_xb + t_idx[:, None] * s_xl + hd * s_xh + offs_p[None, :] * s_xp,
                    mask=mask_tp, other=0.0).to(tl.float32)  # [T, P]
        Bm = tl.load(B_ptr + b * s_bb + t_idx[:, None] * s_bl + grp * s_bg + offs_n[None, :] * s_bn,
                     mask=mask_tn, other=0.0).to(tl.float32)  # [T, N]
        Cm = tl.load(C_ptr + b * s_cb + t_idx[:, None] * s_cl + grp * s_cg + offs_n[None, :] * s_cn,
                     mask=mask_tn, other=0.0).to(tl.float32)  # [T, N]
        xdt = x * dt[:, None]  # [T, P]
        y = tl.dot(Cm, tl.trans(h), input_precision="ieee") * tl.exp(a_cum)[:, None]  # [T, P]
        seg = tl.where(causal, a_cum[:, None] - a_cum[None, :], float("-inf"))
        scores = tl.dot(Cm, tl.trans(Bm), input_precision="ieee") * tl.exp(seg)  # [T, T]
        y += tl.dot(scores, xdt, input_precision="ieee")
        if HAS_D:
            y += Dh * x
        tl.store(y_ptr + ((b * l + t_idx[:, None]) * nh + hd) * p + offs_p[None, :], y, mask=mask_tp)
        a_end = tl.sum(tl.where(last, a_cum, 0.0), axis=0)  # the chunk's total log-decay
        to_end = tl.exp(a_end - a_cum)  # [T]
        h = h * tl.exp(a_end) + tl.dot(tl.trans(xdt * to_end[:, None]), Bm, input_precision="ieee")  # [P, N]
    hT = hT_ptr + ((b * nh + hd) * p + offs_p[:, None]) * n + offs_n[None, :]
    tl.store(hT, h, mask=mask_pn)


def _tiles(p: int, n: int) -> tuple[int, int, int]:
    """(T, BLOCK_P, BLOCK_N): tl.dot needs every side >= 16; large states take shorter chunks."""
    block_n = pow2(n, floor=16)
    return (32 if block_n >= 128 else 64), min(pow2(p, floor=16), 32), block_n


def ssd_chunk_scan(x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
                   initial_states=None, chunk_size=64):
    """The Triton chunked scan; same signature and result as ``ops.ssd_scan`` (``chunk_size`` is
    accepted for parity: the kernel picks its own chunk from the state's size)."""
    device = check_device("ssd_chunk_scan", x, dt, A, B, C, D, dt_bias, initial_states)
    bsz, l, nh, hp = x.shape
    g, n = B.shape[2], B.shape[3]
    if dt.shape != (bsz, l, nh) or C.shape != B.shape or B.shape[:2] != (bsz, l) or nh % g or (
        initial_states is not None and initial_states.shape != (bsz, nh, hp, n)
    ):
        raise ValueError("ssd_scan: shapes must be x [b, l, h, p], dt [b, l, h], B/C [b, l, g, n] with g dividing h, "
                         "initial_states [b, h, p, n]")
    A = A.contiguous()
    D = D.contiguous() if D is not None else None
    dt_bias = dt_bias.contiguous() if dt_bias is not None else None
    y = new_output((bsz, l, nh, hp), device)
    final = new_output((bsz, nh, hp, n), device)
    t, block_p, block_n = _tiles(hp, n)
    h0s = initial_states.stride() if initial_states is not None else (0, 0, 0, 0)
    grid = (bsz, nh, triton.cdiv(hp, block_p))
    with on_device(device):
        _ssd_chunk_scan_kernel[grid](
            x, dt, A, B, C, D if D is not None else A, dt_bias if dt_bias is not None else A,
            initial_states if initial_states is not None else x, y, final,
            l, nh, hp, n, nh // g, float(dt_limit[0]), float(dt_limit[1]),
            *x.stride(), *dt.stride(), *B.stride(), *C.stride(), *h0s,
            HAS_D=D is not None, HAS_BIAS=dt_bias is not None, HAS_H0=initial_states is not None,
            SOFTPLUS=bool(dt_softplus), T=t, BLOCK_P=block_p, BLOCK_N=block_n,
            num_warps=8 if t * block_n >= 4096 else 4,
        )
    return y, final


def ssd_scan(
    x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
    initial_states=None, chunk_size=64,
):
    """Mamba-2 scan from ``initial_states``. Same signature as ops.ssd_scan.

    x [b, l, h, p], dt [b, l, h], A [h], B/C [b, l, g, n], D/dt_bias [h], initial_states [b, h, p, n]
    -> (y [b, l, h, p], final_states [b, h, p, n]) in float32.
    """
    grad = needs_grad(x, dt, A, B, C, D, dt_bias, initial_states)
    fused = mamba_chunk_scan() if x.is_cuda and not grad else None
    if fused is not None:
        y, final = fused(
            x, dt, A, B, C, chunk_size, D=D, dt_bias=dt_bias,
            initial_states=initial_states.float() if initial_states is not None else None,
            dt_softplus=dt_softplus, dt_limit=tuple(dt_limit), return_final_states=True,
        )
        return y.float(), final.float()
    if grad or not (x.is_cuda or interpreting()):
        return ops.ssd_scan(x, dt, A, B, C, D, dt_bias, dt_softplus, dt_limit, initial_states, chunk_size)
    return ssd_chunk_scan(x, dt, A, B, C, D, dt_bias, dt_softplus, dt_limit, initial_states, chunk_size)


def ssd_scan_ref(
    x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
    initial_states=None, chunk_size=64,
):
    """Specification of :func:`ssd_scan` (mirrors ``_ssd_chunk_scan_kernel``, mamba_chunk_scan_combined
    and ops.ssd_scan): the recurrence one token at a time (``ops.ssd_scan_ref``)."""
    return ops.ssd_scan_ref(x, dt, A, B, C, D, dt_bias, dt_softplus, dt_limit, initial_states, chunk_size)
