"""Mamba-1 selective scan that starts from a given SSM state and returns the final one.

mamba-ssm's ``selective_scan_fn`` always starts from zero (state-spaces/mamba #175); this kernel takes
``initial_state`` like ``skillsoup.models.ops.selective_scan`` and has its signature.

One program owns BLOCK_D channels of one batch row and walks the sequence in tiles of BLOCK_L tokens.
Inside a tile the recurrence h_t = dA_t * h_{t-1} + dBu_t is a first-order linear recurrence, so it is
solved with ``tl.associative_scan`` over (dA, dBu) pairs, combine (a1, b1), (a2, b2) -> (a1 a2, a2 b1 + b2),
and the state carried in from the previous tile enters as h_t = (prod dA)_t * h_in + (scanned dBu)_t.
Loads of u / delta / z are [BLOCK_D, BLOCK_L] tiles along the contiguous token axis, the scanned
tiles are [BLOCK_D, BLOCK_N, BLOCK_L] so the scan runs along the innermost axis; padded tokens
get dA = 1, dBu = 0, so the state at the last tile position is the state after the last real token.
"""

from __future__ import annotations

import triton
import triton.language as tl
from skillsoup_kernels._common import check_device, needs_grad, new_output, on_device, pow2, silu, softplus

from skillsoup.models import ops


@triton.jit
def _first_order(a1, b1, a2, b2):
    """Compose two steps h -> a h + b (first, then second)."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def _selective_scan_kernel(
    u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, bias_ptr, h0_ptr, y_ptr, hT_ptr,
    d, l, n,
    s_ub, s_ud, s_ul,
    s_tb, s_td, s_tl,
    s_ad, s_an,
    s_bb, s_bn, s_bl,
    s_cb, s_cn, s_cl,
    s_zb, s_zd, s_zl,
    s_hb, s_hd, s_hn,
    HAS_D: tl.constexpr, HAS_Z: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_H0: tl.constexpr,
    SOFTPLUS: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)  # 64-bit offsets: b * stride can pass 2**31
    offs_d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)  # [D]
    offs_n = tl.arange(0, BLOCK_N)  # [N]
    mask_d = offs_d < d
    mask_dn = mask_d[:, None] & (offs_n < n)[None, :]  # [D, N]
    A = tl.load(A_ptr + offs_d[:, None] * s_ad + offs_n[None, :] * s_an, mask=mask_dn, other=0.0).to(tl.float32)
    if HAS_H0:
        h = tl.load(h0_ptr + b * s_hb + offs_d[:, None] * s_hd + offs_n[None, :] * s_hn, mask=mask_dn, other=0.0)
        h = h.to(tl.float32)  # [D, N]
    else:
        h = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)  # [D]
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_d, mask=mask_d, other=0.0).to(tl.float32)  # [D]
    is_last = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[None, None, :]  # [1, 1, L]

    for start in range(0, l, BLOCK_L):
        offs_l = start + tl.arange(0, BLOCK_L)  # [L]
        mask_l = offs_l < l
        mask_dl = mask_d[:, None] & mask_l[None, :]  # [D, L]
        u = tl.load(u_ptr + b * s_ub + offs_d[:, None] * s_ud + offs_l[None, :] * s_ul, mask=mask_dl, other=0.0)
        u = u.to(tl.float32)  # [D, L]
        dt = tl.load(dt_ptr + b * s_tb + offs_d[:, None] * s_td + offs_l[None, :] * s_tl, mask=mask_dl, other=0.0)
        dt = dt.to(tl.float32)  # [D, L]
        if HAS_BIAS:
            dt += bias[:, None]
        if SOFTPLUS:
            dt = softplus(dt)
        dt = tl.where(mask_dl, dt, 0.0)  # padding: dA = 1, dBu = 0, the state passes through
        mask_nl = (offs_n < n)[:, None] & mask_l[None, :]  # [N, L]
        Bt = tl.load(B_ptr + b * s_bb + offs_n[:, None] * s_bn + offs_l[None, :] * s_bl, mask=mask_nl, other=0.0)
        Ct = tl.load(C_ptr + b * s_cb + offs_n[:, None] * s_cn + offs_l[None, :] * s_cl, mask=mask_nl, other=0.0)
        # tiles are [D, N, L]: the scan runs along the innermost axis, the compiler's best-trodden path
        dA = tl.exp(dt[:, None, :] * A[:, :, None])  # [D, N, L]
        dA = tl.where(dt[:, None, :] == 0.0, 1.0, dA)  # padding (and dt = 0) pass the state through exactly
        dBu = (dt * u)[:, None, :] * Bt.to(tl.float32)[None, :, :]  # [D, N, L]
        dA_cum, dBu_cum = tl.associative_scan((dA, dBu), axis=2, combine_fn=_first_order)
        states = dA_cum * h[:, :, None] + dBu_cum  # [D, N, L]: h_t for every token of the tile
        y = tl.sum(states * Ct.to(tl.float32)[None, :, :], axis=1)  # [D, L]
        if HAS_D:
            y += Dv[:, None] * u
        if HAS_Z:
            z = tl.load(z_ptr + b * s_zb + offs_d[:, None] * s_zd + offs_l[None, :] * s_zl, mask=mask_dl, other=0.0)
            y *= silu(z.to(tl.float32))
        tl.store(y_ptr + (b * d + offs_d[:, None]) * l + offs_l[None, :], y, mask=mask_dl)
        h = tl.sum(tl.where(is_last, states, 0.0), axis=2)  # [D, N], the state after this tile

    tl.store(hT_ptr + (b * d + offs_d[:, None]) * n + offs_n[None, :], h, mask=mask_dn)


# Tokens per tile (a power of two), or None for the default below. benchmarks/bench_gpu.py sweeps it:
# longer tiles mean fewer sequential steps per program and more programs (fewer channels each).
TOKENS_PER_TILE: int | None = None


def _blocks(d: int, l: int, n: int) -> tuple[int, int, int]:
    """(BLOCK_D, BLOCK_L, BLOCK_N): about 2,048 elements per [D, N, L] tile keeps registers in check;
    short inputs get a short tile (at least 4 tokens, to keep size-1 scan axes out of the compiler)."""
    block_n = pow2(n)
    block_l = min(TOKENS_PER_TILE or (16 if block_n <= 16 else 8), pow2(l, floor=4))
    block_d = max(1, min(pow2(d), 2048 // (block_l * block_n)))
    return block_d, block_l, block_n


def selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None,
    chunk_size=64, block_size=256,
):
    """Mamba-1 selective scan from ``initial_state`` (Triton). Same signature as ops.selective_scan.

    u, delta, z [b, d, l]; A [d, n]; B, C [b, n, l]; D, delta_bias [d]; initial_state [b, d, n]
    -> (y [b, d, l], final_state [b, d, n]) in float32. Any strides; ``chunk_size`` and ``block_size``
    (the PyTorch scan's tiling) are accepted for parity and unused: the kernel tiles by BLOCK_L and
    never overflows (it multiplies decays, it never divides by them). With autograd recording it runs
    ops.selective_scan.
    """
    if needs_grad(u, delta, A, B, C, D, z, delta_bias, initial_state):
        return ops.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, chunk_size)
    device = check_device("selective_scan", u, delta, A, B, C, D, z, delta_bias, initial_state)
    bsz, d, l = u.shape
    n = A.shape[-1]
    if delta.shape != u.shape or B.shape != (bsz, n, l) or C.shape != (bsz, n, l) or A.shape != (d, n) or (
        initial_state is not None and initial_state.shape != (bsz, d, n)
    ):
        raise ValueError(
            "selective_scan: shapes must be u/delta [b, d, l], A [d, n], B/C [b, n, l], initial_state [b, d, n]"
        )
    D = D.contiguous() if D is not None else None  # [d], read with stride 1
    delta_bias = delta_bias.contiguous() if delta_bias is not None else None
    y = new_output((bsz, d, l), device)
    h_final = new_output((bsz, d, n), device)
    block_d, block_l, block_n = _blocks(d, l, n)
    zs = z.stride() if z is not None else (0, 0, 0)
    hs = initial_state.stride() if initial_state is not None else (0, 0, 0)
    grid = (bsz, triton.cdiv(d, block_d))
    with on_device(device):
        _selective_scan_kernel[grid](
            u, delta, A, B, C,
            D if D is not None else u, z if z is not None else u, delta_bias if delta_bias is not None else u,
            initial_state if initial_state is not None else u, y, h_final,
            d, l, n,
            *u.stride(), *delta.stride(), *A.stride(), *B.stride(), *C.stride(), *zs, *hs,
            HAS_D=D is not None, HAS_Z=z is not None, HAS_BIAS=delta_bias is not None,
            HAS_H0=initial_state is not None, SOFTPLUS=bool(delta_softplus),
            BLOCK_D=block_d, BLOCK_L=block_l, BLOCK_N=block_n,
        )
    return y, h_final


def selective_scan_ref(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None,
    chunk_size=64, block_size=256,
):
    """Specification of :func:`selective_scan` (mirrors ``_selective_scan_kernel``): the recurrence,
    one token at a time (``ops.selective_scan_ref``)."""
    return ops.selective_scan_ref(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state, chunk_size)
