"""Fused decode steps of the Mamba and Mamba-2 mixers on CPU: one C call between in_proj and out_proj.

A decode step of :func:`mamba1.step` is about fifteen small PyTorch ops per layer around four
matrix-vector products (conv window shift, conv, silu, x_proj, dt_proj, the state update, gate);
at one token their launch cost is a large part of the step. Here in_proj and out_proj stay PyTorch
matmuls and everything between them is ``ssc_mamba1_step`` / ``ssc_mamba2_step`` (csrc/step.c).

Twins: ``mamba1_step_ref`` / ``mamba2_step_ref`` are the mixers' own steps on the reference ops,
with the same signature; tests/models/test_cpu_ops.py compares them. A mixer the kernels do not
cover (weights that are not float32, an activation other than silu, autograd on) returns None, and
the caller takes its PyTorch path. So does a mixer with RMS norms on dt, B and C (FalconMamba, Jamba),
which the kernel does not apply.
"""

from __future__ import annotations

import weakref
from functools import partial

import torch

from skillsoup.models import cpu_ops, mamba1, mamba2, ops

# (what, id(weight)) -> (weak reference to the weight, (its version counter, its data pointer), the
# value derived from it); tensors compare by value, so a WeakKeyDictionary cannot hold them
_DERIVED: dict[tuple[str, int], tuple[weakref.ref, tuple[int, int], torch.Tensor]] = {}


def _derived(what: str, weight: torch.Tensor) -> torch.Tensor:
    """``decay``: -exp(A_log); ``transposed``: a [r, d] float32 copy of dt_proj's [d, r] weight (what
    the kernel reads). Computed again only when the weight changes (in place, re-pointed or replaced)."""
    key = (what, id(weight))
    cached = _DERIVED.get(key)
    if cached is None or cached[0]() is not weight or cached[1] != (weight._version, weight.data_ptr()):
        ref = weakref.ref(weight, lambda _, key=key: _DERIVED.pop(key, None))
        w = weight.detach().float()
        value = (-torch.exp(w) if what == "decay" else w.t()).contiguous()
        cached = (ref, (weight._version, weight.data_ptr()), value)
        _DERIVED[key] = cached
    return cached[2]


def _decay_rates(A_log: torch.Tensor) -> torch.Tensor:
    """-exp(A_log) as float32, computed again only when A_log changes (in place or replaced)."""
    return _derived("decay", A_log)


def _fused_ok(mixer, *tensors) -> bool:
    if getattr(mixer, "activation", None) not in ("silu", "swish"):
        return False
    if getattr(mixer, "b_layernorm", None) is not None:  # FalconMamba, Jamba: RMS norms on dt, B, C
        return False
    if torch.is_grad_enabled() and any(p.requires_grad for p in mixer.parameters()):
        return False
    return all(t is None or (t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous())
               for t in tensors)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """float32 [b, c] with unit stride along c (a view when it already is)."""
    t = t.float()
    return t if t.stride(-1) == 1 else t.contiguous()


def mamba1_step(mixer, hidden, conv_state, ssm_state, inplace: bool = False):
    """Same contract as :func:`mamba1.step` (without ``impl``): hidden [b, hidden] -> (out
    [b, hidden], conv_state [b, d, k], ssm_state [b, d, n]); None when the mixer is not covered.
    ``inplace``: the new states are written over the given ones when those are float32 and
    contiguous (the kernel reads each element before it writes it)."""
    conv_w, x_w, dt_w = mixer.conv1d.weight, mixer.x_proj.weight, mixer.dt_proj.weight
    if not _fused_ok(mixer, conv_w, mixer.conv1d.bias, x_w, dt_w, mixer.dt_proj.bias, mixer.D):
        return None
    d, n, r, k = mixer.intermediate_size, mixer.ssm_state_size, mixer.time_step_rank, mixer.conv_kernel_size
    xz = _rows(mixer.in_proj(hidden))  # [b, 2d]: x, then the gate
    b = xz.shape[0]
    conv_in, ssm_in = conv_state.float().contiguous(), ssm_state.float().contiguous()
    conv_out, ssm_out = (conv_in, ssm_in) if inplace else (cpu_ops.new(*conv_in.shape), cpu_ops.new(*ssm_in.shape))
    y = cpu_ops.new(b, d)
    cpu_ops._lib().ssc_mamba1_step(
        b, d, n, r, k, xz.data_ptr(), xz.stride(0), conv_in.data_ptr(), conv_out.data_ptr(),
        conv_w.data_ptr(), cpu_ops._ptr(mixer.conv1d.bias), x_w.data_ptr(),
        _derived("transposed", dt_w).data_ptr(), mixer.dt_proj.bias.data_ptr(), _decay_rates(mixer.A_log).data_ptr(),
        mixer.D.data_ptr(), ssm_in.data_ptr(), ssm_out.data_ptr(), y.data_ptr(),
    )
    return mixer.out_proj(y), conv_out, ssm_out


def mamba2_step(mixer, hidden, conv_state, ssm_state, inplace: bool = False):
    """Same contract as :func:`mamba2.step` (without ``impl``): hidden [b, hidden] -> (out
    [b, hidden], conv_state [b, conv_dim, k], ssm_state [b, h, p, n]); None when not covered.
    ``inplace`` as in :func:`mamba1_step`."""
    conv_w, norm = mixer.conv1d.weight, mixer.norm
    if not _fused_ok(mixer, conv_w, mixer.conv1d.bias, mixer.dt_bias, mixer.D, norm.weight):
        return None
    h, p, g, n = mixer.num_heads, mixer.head_dim, mixer.n_groups, mixer.ssm_state_size
    proj = _rows(mixer.in_proj(hidden))  # [b, d + conv_dim + h]: gate, xBC, dt
    b = proj.shape[0]
    conv_in, ssm_in = conv_state.float().contiguous(), ssm_state.float().contiguous()
    conv_out, ssm_out = (conv_in, ssm_in) if inplace else (cpu_ops.new(*conv_in.shape), cpu_ops.new(*ssm_in.shape))
    y = cpu_ops.new(b, h * p)
    lo, hi = (float(v) for v in mixer.time_step_limit)
    cpu_ops._lib().ssc_mamba2_step(
        b, h, p, g, n, mixer.conv_kernel_size, proj.data_ptr(), proj.stride(0), conv_in.data_ptr(),
        conv_out.data_ptr(), conv_w.data_ptr(), cpu_ops._ptr(mixer.conv1d.bias),
        _decay_rates(mixer.A_log).data_ptr(), mixer.D.data_ptr(), mixer.dt_bias.data_ptr(), lo, hi,
        ssm_in.data_ptr(), ssm_out.data_ptr(), norm.weight.data_ptr(), norm.group_size,
        float(norm.variance_epsilon), y.data_ptr(),
    )
    return mixer.out_proj(y), conv_out, ssm_out


mamba1_step_ref = partial(mamba1.step, impl=ops)  # the ops module is itself a reference namespace
mamba2_step_ref = partial(mamba2.step, impl=ops)
