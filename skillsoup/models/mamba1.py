"""Mamba-1 mixer with explicit state, on the weights of a Hugging Face ``MambaMixer`` (also
``FalconMambaMixer`` and ``JambaMambaMixer``, which add RMS norms on dt, B and C).

Reads top to bottom like the paper's block: in_proj -> causal conv (continuing from the cached
inputs) -> x_proj to (dt, B, C) -> selective scan (continuing from the cached SSM state) -> gate
-> out_proj. Shapes are end-of-line comments; names follow ``ops.py``'s glossary.

transformers 5.23 restarts the Mamba-1 scan from zero when it continues several tokens from a
cache; :func:`install_exact_forward` replaces such a mixer's forward inside a transformers model
(Jamba) with this exact one, reading and writing the same cache.
"""

from __future__ import annotations

import functools

import torch

from skillsoup.models import ops


def state_shapes(config) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-row (conv, ssm) state shapes of one layer."""
    d = config.intermediate_size
    return (d, config.conv_kernel), (d, config.state_size)


def _split_xproj(mixer, x):  # x [b, l, d] after conv
    dt_rank, n = mixer.time_step_rank, mixer.ssm_state_size
    dt, B, C = torch.split(mixer.x_proj(x), [dt_rank, n, n], dim=-1)  # [b, l, r], [b, l, n], [b, l, n]
    if getattr(mixer, "b_layernorm", None) is not None:  # FalconMamba, Jamba: RMS norms on dt, B, C
        dt, B, C = mixer.dt_layernorm(dt), mixer.b_layernorm(B), mixer.c_layernorm(C)
    dt = dt @ mixer.dt_proj.weight.t()  # [b, l, d], bias added inside the scan (as mamba-ssm does)
    return dt, B, C


def forward(mixer, hidden, conv_state, ssm_state, impl, log_decay=None, lengths=None):
    """hidden [b, l, hidden] -> (out [b, l, hidden], conv_state [b, d, k], ssm_state [b, d, n]).

    ``log_decay``: None on the normal path; a list to append this call's total log-decay to
    ([b, d, n], A * sum dt), which decay mixing needs (skillsoup.models.chunks).
    ``lengths``: None, or [b] int64 on the device: row r's tokens after lengths[r] are padding
    (a fixed-length CUDA graph reading a shorter query); the returned states are those after each
    row's real tokens, exactly (see :func:`ops.padding_is_noop`)."""
    dtype = hidden.dtype
    x, gate = mixer.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)  # [b, d, l] each
    conv_in = x
    x, conv_state_out = impl.causal_conv1d(
        x, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, conv_state, activation=mixer.activation
    )  # [b, d, l]
    dt, B, C = _split_xproj(mixer, x.transpose(1, 2))
    if lengths is not None:
        conv_state_out = ops.conv_window_at(conv_state, conv_in, lengths)
        dt = ops.padding_is_noop(dt, lengths)
    A = -torch.exp(ops.upcast(mixer.A_log))  # [d, n]
    if log_decay is not None:
        log_decay.append(ops.selective_scan_log_decay(dt.transpose(1, 2), A, mixer.dt_proj.bias, True))
    y, ssm_state = impl.selective_scan(
        x, dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D=mixer.D, z=gate,
        delta_bias=mixer.dt_proj.bias, delta_softplus=True, initial_state=ssm_state,
    )  # [b, d, l]
    return mixer.out_proj(y.transpose(1, 2).to(dtype)), conv_state_out.float(), ssm_state


def step(mixer, hidden, conv_state, ssm_state, impl, inplace: bool = False):
    """One token. hidden [b, hidden] -> (out [b, hidden], conv_state, ssm_state). ``inplace``: a
    fused step may write the new states over the given ones (the caller owns them)."""
    fused = getattr(impl, "mamba1_step", None)  # the whole step in one kernel call (cpu_steps.py)
    if fused is not None and (done := fused(mixer, hidden, conv_state, ssm_state, inplace)) is not None:
        return done
    dtype = hidden.dtype
    x, gate = mixer.in_proj(hidden).chunk(2, dim=-1)  # [b, d] each
    conv_state = torch.cat([conv_state[..., 1:], x.float()[..., None]], dim=-1)  # [b, d, k]
    w = mixer.conv1d.weight.squeeze(1).float()  # [d, k]
    x = (conv_state * w).sum(-1)
    if mixer.conv1d.bias is not None:
        x = x + mixer.conv1d.bias.float()
    x = torch.nn.functional.silu(x).to(dtype)  # [b, d]
    dt, B, C = _split_xproj(mixer, x)
    A = -torch.exp(mixer.A_log.float())
    y, ssm_state = impl.selective_state_update(
        ssm_state, x, dt, A, B, C, D=mixer.D, z=gate, dt_bias=mixer.dt_proj.bias, dt_softplus=True
    )
    return mixer.out_proj(y.to(dtype)), conv_state, ssm_state


def step_inplace(mixer, hidden, conv_state, ssm_state, decode, A):
    """:func:`step` writing the new conv window and SSM state into ``conv_state`` / ``ssm_state``
    (views of a state's flat buffer): what the decode graphs capture. ``decode`` holds the in-place
    ops (``step_ops`` or their Triton twins), ``A`` is -exp(A_log), computed once by the caller.
    Returns out [b, hidden]."""
    dtype = hidden.dtype
    x, gate = mixer.in_proj(hidden).chunk(2, dim=-1)  # [b, d] each
    x = decode.conv_step_(conv_state, x, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, "silu")  # as step
    dt, B, C = _split_xproj(mixer, x)
    y = decode.selective_state_update_(ssm_state, x, dt, A, B, C, D=mixer.D, z=gate, dt_bias=mixer.dt_proj.bias,
                                       dt_softplus=True, out_dtype=dtype)
    return mixer.out_proj(y)


# ---- inside a transformers model ------------------------------------------------------------------
def is_mamba1_mixer(module) -> bool:
    return all(hasattr(module, a) for a in ("x_proj", "dt_proj", "A_log", "conv1d", "layer_idx"))


def install_exact_forward(hf_model, impl) -> int:
    """Give every Mamba-1 mixer of ``hf_model`` the exact forward below; returns how many."""
    mixers = [m for m in hf_model.modules() if is_mamba1_mixer(m)]
    for mixer in mixers:
        mixer.forward = functools.partial(exact_hf_forward, mixer, impl)
    return len(mixers)


def exact_hf_forward(mixer, impl, hidden_states, cache_params=None, attention_mask=None, **kwargs):
    """A transformers Mamba-1 mixer's forward that continues exactly from the cache's conv and SSM
    state (one token or many), and writes the new ones back into the cache."""
    if attention_mask is not None and attention_mask.dim() == 2 and hidden_states.shape[1] > 1:
        hidden_states = (hidden_states * attention_mask[:, :, None]).to(hidden_states.dtype)  # zero padding
    bsz, length, _ = hidden_states.shape
    conv_shape, ssm_shape = state_shapes_of(mixer)
    layer = cache_params.layers[mixer.layer_idx] if cache_params is not None else None
    if layer is not None and layer.has_previous_state[0]:
        conv_state, ssm_state = layer.conv_states[0], layer.recurrent_states[0]
    else:
        zeros = functools.partial(torch.zeros, device=hidden_states.device, dtype=torch.float32)
        conv_state, ssm_state = zeros(bsz, *conv_shape), zeros(bsz, *ssm_shape)
    if length == 1:
        out, conv_state, ssm_state = step(mixer, hidden_states[:, 0], conv_state, ssm_state, impl)
        out = out[:, None]
    else:
        out, conv_state, ssm_state = forward(mixer, hidden_states, conv_state, ssm_state, impl)
    if layer is not None:
        if not layer.is_conv_states_initialized[0]:
            layer.lazy_initialization(conv_states=conv_state.float(), recurrent_states=ssm_state.float())
        layer.conv_states[0].copy_(conv_state)
        layer.recurrent_states[0].copy_(ssm_state)
        layer.has_previous_state[0] = True
    return out


def state_shapes_of(mixer) -> tuple[tuple[int, ...], tuple[int, ...]]:
    d = mixer.intermediate_size
    return (d, mixer.conv_kernel_size), (d, mixer.ssm_state_size)