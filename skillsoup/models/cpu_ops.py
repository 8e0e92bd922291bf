"""Fused CPU ops: the C kernels of ``csrc/`` (scan.c, step.c) behind the signatures of ``ops.py``.

Each function here has the signature and the contract of its twin in :mod:`skillsoup.models.ops`
(``causal_conv1d`` / ``causal_conv1d_ref``, ``selective_scan`` / ``selective_scan_ref``, ...),
which stays the specification and the training path: a call that needs autograd goes to the
PyTorch op. The kernels read token-major tensors ([b, l, channels] with channel stride 1, the
layout the projections produce), so the transposed views the mixers pass cost no copy; outputs come
back as views of token-major buffers in the shapes ``ops.py`` returns.

Threads: a kernel call runs on up to ``torch.get_num_threads()`` threads only when it has at least
``MIN_SECONDS_PER_THREAD`` of work per thread (estimated from measured per-element costs), and on the
calling thread otherwise. Starting and joining a thread costs tens of microseconds, and on a busy
2-core machine the join can wait a scheduler slice for a thread that is not running: worth it for
a 1,024-token capture (tens of ms per layer), not for a 32-token query or a decode step.
"""

from __future__ import annotations

import torch

from skillsoup.models import cpu_build, ops, step_ops

MIN_SECONDS_PER_THREAD = 2e-3
# single-core seconds per element on the AVX2 machine this was tuned on (EPYC, 2.4 GHz)
COST_SCAN = 0.7e-9  # Mamba-1: one state update (an exp and two multiply-adds)
COST_SSD = 0.15e-9  # Mamba-2: one state update (three multiply-adds)
COST_CONV = 0.3e-9  # one conv output (k multiply-adds and a silu)


def available() -> tuple[bool, str]:
    """(True, '') when the kernels are built and loaded, else (False, why not)."""
    lib, why = cpu_build.load()
    return lib is not None, why


def _lib():
    lib, why = cpu_build.load()
    if lib is None:
        raise RuntimeError(f"the fused CPU kernels are not available: {why}")
    return lib


def _threads(seconds: float) -> int:
    """Threads for a call of about ``seconds`` of single-core work."""
    return max(1, min(torch.get_num_threads(), int(seconds / MIN_SECONDS_PER_THREAD)))


def new(*shape) -> torch.Tensor:
    """An output buffer (float32, CPU) that the kernel fills; the tests swap in NaN-filled ones so
    that an unwritten element cannot pass for a right one."""
    return torch.empty(*shape, dtype=torch.float32)


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _ptr(t) -> int | None:
    return None if t is None else t.data_ptr()


def _contig(t):
    return None if t is None else t.float().contiguous()


def _channel_stride_one(t, dim: int):
    """float32 ``t`` with stride 1 along ``dim`` (the kernels' channel axis), copying only if needed."""
    t = t.float()
    if t.shape[dim] > 1 and t.stride(dim) != 1:
        t = t.movedim(dim, -1).contiguous().movedim(-1, dim)
    return t


# ---- causal depthwise conv -------------------------------------------------------------------
def causal_conv1d(x, weight, bias=None, initial_states=None, activation=None):
    """Same contract as :func:`ops.causal_conv1d`: x [b, c, l], weight [c, k], bias [c],
    initial_states [b, c, k] -> (out [b, c, l], final_states [b, c, k]) in x's dtype."""
    if activation not in (None, "silu", "swish"):
        raise ValueError(f"unsupported conv activation {activation!r}")
    if _needs_grad(x, weight, bias, initial_states):
        return ops.causal_conv1d(x, weight, bias, initial_states, activation)
    b, c, l = x.shape
    k = weight.shape[-1]
    xf = _channel_stride_one(x, 1)
    w, bs, s0 = _contig(weight.reshape(c, k)), _contig(bias), _contig(initial_states)
    out = new(b, l, c)  # token-major: what x_proj / in_proj views want
    final = new(b, c, k)
    _lib().ssc_causal_conv1d(
        b, l, c, k, xf.data_ptr(), xf.stride(0), xf.stride(2), w.data_ptr(), _ptr(bs), _ptr(s0),
        out.data_ptr(), out.stride(0), out.stride(1), final.data_ptr(), int(activation is not None),
        _threads(b * c * l * COST_CONV),
    )
    return out.transpose(1, 2).to(x.dtype), final.to(x.dtype)


causal_conv1d_ref = ops.causal_conv1d


# ---- Mamba-1 selective scan ----------------------------------------------------------------------
def selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None,
    chunk_size=64, block_size=256,
):
    """Same contract as :func:`ops.selective_scan` (chunk_size and block_size do not apply: the
    kernel walks time once per block of 16 channels, one exp per state update).

    u, delta, z [b, d, l]; A [d, n]; B, C [b, n, l]; D, delta_bias [d]; initial_state [b, d, n]
    -> (y [b, d, l], final_state [b, d, n]) in float32."""
    del chunk_size, block_size
    if _needs_grad(u, delta, A, B, C, D, z, delta_bias, initial_state):
        return ops.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, initial_state)
    b, d, l = u.shape
    n = A.shape[-1]
    u_, dl, B_, C_ = (_channel_stride_one(t, 1) for t in (u, delta, B, C))  # [b, c, l], stride 1 along c
    z_ = None if z is None else _channel_stride_one(z, 1)
    A_, D_, bias, h0 = _contig(A), _contig(D), _contig(delta_bias), _contig(initial_state)
    y = new(b, l, d)
    h = new(b, d, n)
    _lib().ssc_selective_scan(
        b, l, d, n,
        u_.data_ptr(), u_.stride(0), u_.stride(2), dl.data_ptr(), dl.stride(0), dl.stride(2),
        _ptr(z_), *((0, 0) if z_ is None else (z_.stride(0), z_.stride(2))),
        B_.data_ptr(), B_.stride(0), B_.stride(2), C_.data_ptr(), C_.stride(0), C_.stride(2),
        A_.data_ptr(), _ptr(D_), _ptr(bias), int(bool(delta_softplus)), _ptr(h0),
        y.data_ptr(), y.stride(0), y.stride(1), h.data_ptr(), _threads(b * d * n * l * COST_SCAN),
    )
    return y.transpose(1, 2), h


selective_scan_ref = ops.selective_scan_ref


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """Same contract as :func:`ops.selective_state_update`: one Mamba-1 decode step.
    state [b, d, n], x/dt/z [b, d], B/C [b, n] -> (y [b, d], new state [b, d, n])."""
    if _needs_grad(state, x, dt, A, B, C, D, z, dt_bias):
        return ops.selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    b, d = x.shape
    x_, dt_, B_, C_ = (_channel_stride_one(t, 1) for t in (x, dt, B, C))
    z_ = None if z is None else _channel_stride_one(z, 1)
    A_, D_, bias, h0 = _contig(A), _contig(D), _contig(dt_bias), _contig(state)
    y = new(b, d)
    h = new(b, d, A.shape[-1])
    _lib().ssc_selective_state_update(
        b, d, A.shape[-1], x_.data_ptr(), x_.stride(0), dt_.data_ptr(), dt_.stride(0), _ptr(z_),
        0 if z_ is None else z_.stride(0), B_.data_ptr(), B_.stride(0), C_.data_ptr(), C_.stride(0),
        A_.data_ptr(), _ptr(D_), _ptr(bias), int(bool(dt_softplus)), h0.data_ptr(), h.data_ptr(), y.data_ptr(),
    )
    return y, h


selective_state_update_ref = ops.selective_state_update


# ---- Mamba-2 (SSD) scan ---------------------------------------------------------------------------
def ssd_scan(
    x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
    initial_states=None, chunk_size=64,
):
    """Same contract as :func:`ops.ssd_scan`, by a sequential scan per (head, 16 head dims):
    x [b, l, h, p], dt [b, l, h], A [h], B/C [b, l, g, n], D/dt_bias [h], initial_states
    [b, h, p, n] -> (y [b, l, h, p], final_states [b, h, p, n]) in float32."""
    del chunk_size
    if _needs_grad(x, dt, A, B, C, D, dt_bias, initial_states):
        return ops.ssd_scan(x, dt, A, B, C, D, dt_bias, dt_softplus, dt_limit, initial_states)
    b, l, nh, p = x.shape
    g, n = B.shape[2], B.shape[3]
    x_, dt_ = _channel_stride_one(x, 3), dt.float()
    B_, C_ = _channel_stride_one(B, 3), _channel_stride_one(C, 3)
    A_, D_, bias, s0 = _contig(A), _contig(D), _contig(dt_bias), _contig(initial_states)
    y = new(b, l, nh, p)
    s = new(b, nh, p, n)
    _lib().ssc_ssd_scan(
        b, l, nh, p, g, n,
        x_.data_ptr(), x_.stride(0), x_.stride(1), x_.stride(2), dt_.data_ptr(), dt_.stride(0), dt_.stride(1),
        A_.data_ptr(), B_.data_ptr(), B_.stride(0), B_.stride(1), B_.stride(2),
        C_.data_ptr(), C_.stride(0), C_.stride(1), C_.stride(2),
        _ptr(D_), _ptr(bias), int(bool(dt_softplus)), float(dt_limit[0]), float(dt_limit[1]), _ptr(s0),
        y.data_ptr(), y.stride(0), y.stride(1), y.stride(2), s.data_ptr(),
        _threads(b * l * nh * p * n * COST_SSD),
    )
    return y, s


ssd_scan_ref = ops.ssd_scan_ref


def ssd_state_update(state, x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf"))):
    """Same contract as :func:`ops.ssd_state_update`: state [b, h, p, n], x [b, h, p], dt [b, h],
    B/C [b, h, n] (per head) -> (y [b, h, p], new state)."""
    if _needs_grad(state, x, dt, A, B, C, D, dt_bias):
        return ops.ssd_state_update(state, x, dt, A, B, C, D, dt_bias, dt_softplus, dt_limit)
    b, nh, p = x.shape
    n = B.shape[-1]
    x_ = x.float().reshape(b, nh * p)  # rows of h * p values, copied only when not already so
    x_ = x_ if x_.stride(1) == 1 else x_.contiguous()
    dt_, B_, C_ = _channel_stride_one(dt, 1), _channel_stride_one(B, 2), _channel_stride_one(C, 2)
    A_, D_, bias, s0 = _contig(A), _contig(D), _contig(dt_bias), _contig(state)
    y = new(b, nh, p)
    s = new(b, nh, p, n)
    _lib().ssc_ssd_state_update(
        b, nh, p, nh, n, x_.data_ptr(), x_.stride(0), dt_.data_ptr(), dt_.stride(0),
        B_.data_ptr(), B_.stride(0), B_.stride(1), C_.data_ptr(), C_.stride(0), C_.stride(1),
        A_.data_ptr(), _ptr(D_), _ptr(bias), int(bool(dt_softplus)), float(dt_limit[0]), float(dt_limit[1]),
        s0.data_ptr(), s.data_ptr(), y.data_ptr(),
    )
    return y, s


ssd_state_update_ref = ops.ssd_state_update


# ---- the glue between two layers of a decode step ------------------------------------------------
def add_rms_norm_(residual, out, weight, eps, normed):
    """residual [b, c] += out [b, c] (None: nothing to add, the first layer), in place; normed
    [b, c] <- RMSNorm(residual) * weight, as transformers' MambaRMSNorm computes it. float32,
    contiguous rows (the decode plan's buffers, cpu_decode.py); the twin of :func:`add_rms_norm_ref`."""
    b, c = residual.shape
    for name, t in (("residual", residual), ("out", out), ("weight", weight), ("normed", normed)):
        if t is not None and (t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous()):
            raise ValueError(f"add_rms_norm_: {name} must be a contiguous float32 CPU tensor")
    if (out is not None and out.shape != residual.shape) or normed.shape != residual.shape or weight.shape != (c,):
        raise ValueError(f"add_rms_norm_: shapes {tuple(residual.shape)}, {None if out is None else tuple(out.shape)}, "
                         f"{tuple(weight.shape)}, {tuple(normed.shape)} do not fit [b, c], [b, c], [c], [b, c]")
    _lib().ssc_add_rms_norm(b, c, residual.data_ptr(), _ptr(out), weight.data_ptr(), float(eps), normed.data_ptr())


def add_rms_norm_ref(residual, out, weight, eps, normed):
    """:func:`step_ops.add_rms_norm` (the residual add and RMSNorm of ``StackBackend._blocks``)
    written into the given buffers: the reference of :func:`add_rms_norm_`."""
    new_residual, new_normed = step_ops.add_rms_norm(residual, out, weight, eps)
    residual.copy_(new_residual)
    normed.copy_(new_normed)
