"""In-place decode ops in PyTorch: the specification of the fused decode kernels, and the path the
static-buffer decoder runs on CPU.

A decode step that CUDA graphs can capture must read and write fixed buffers: these ops write the
new conv window and SSM state into the tensors they are given (views of a state's flat buffer)
instead of returning new ones. Each is written with exactly the PyTorch operations of
``mamba1.step`` / ``mamba2.step`` / ``StackBackend._blocks``, so on CPU the in-place step is bitwise
equal to :meth:`StateModel.step`. ``skillsoup_kernels.decode_step`` has their Triton twins with the
same signatures (one kernel each).

    conv_step_            the conv window shifted by one input, the conv output (silu) in x's dtype
    selective_state_update_   Mamba-1: h <- exp(dt A) h + dt x B, returns y (gated) in ``out_dtype``
    ssd_state_update_     Mamba-2: the same with one decay per head; B, C per group [b, g, n]
    add_rms_norm          the residual add of the previous layer and this layer's RMSNorm
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from skillsoup.models import ops


def conv_step_(conv_state, x, weight, bias=None, activation="silu"):
    """conv_state [b, c, k] float32 (updated in place), x [b, c] -> conv output [b, c] in x's dtype."""
    conv_state.copy_(torch.cat([conv_state[..., 1:], x.float()[..., None]], dim=-1))
    out = (conv_state * weight.float()).sum(-1)  # weight [c, k]
    if bias is not None:
        out = out + bias.float()
    if activation in ("silu", "swish"):
        out = F.silu(out)
    elif activation is not None:
        raise ValueError(f"unsupported conv activation {activation!r}")
    return out.to(x.dtype)


def selective_state_update_(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False,
                            out_dtype=torch.float32):
    """``ops.selective_state_update`` writing the new state into ``state`` [b, d, n]; y [b, d] in ``out_dtype``."""
    y, new_state = ops.selective_state_update(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus)
    state.copy_(new_state)
    return y.to(out_dtype)


def ssd_state_update_(state, x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf"))):
    """``ops.ssd_state_update`` writing into ``state`` [b, h, p, n]; B/C per group [b, g, n]
    (head j reads group j // (h / g)). Returns y [b, h, p] float32."""
    rep = state.shape[1] // B.shape[1]
    B, C = B.repeat_interleave(rep, dim=1), C.repeat_interleave(rep, dim=1)
    y, new_state = ops.ssd_state_update(state, x, dt, A, B, C, D, dt_bias, dt_softplus, dt_limit)
    state.copy_(new_state)
    return y


def rms_norm(x, weight, eps):
    """transformers' MambaRMSNorm / Mamba2RMSNorm: normalise in float32, cast back, scale."""
    input_dtype = x.dtype
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(input_dtype)


def add_rms_norm(hidden, out, weight, eps, residual_in_fp32=True, cast_input=True):
    """The residual stream at a layer's input and its normed value, as ``StackBackend._blocks`` has them.

    hidden: the previous layer's residual (or the embeddings), out: its mixer output (None at
    layer 0) -> (residual, normed): residual = hidden + out (float32 when ``residual_in_fp32``),
    normed = RMSNorm(residual cast to the weight's dtype, or as it is when ``cast_input`` is off:
    the final norm)."""
    if out is not None:
        hidden = hidden + out
    residual = hidden.float() if residual_in_fp32 else hidden
    return residual, rms_norm(hidden.to(weight.dtype) if cast_input else hidden, weight, eps)


DECODE_REF = types.SimpleNamespace(
    name="ref",
    conv_step_=conv_step_,
    selective_state_update_=selective_state_update_,
    ssd_state_update_=ssd_state_update_,
    add_rms_norm=add_rms_norm,
)
