"""Mamba-2 mixer with explicit state, on the weights of a Hugging Face ``Mamba2Mixer``.

in_proj -> (gate, xBC, dt) -> causal conv over xBC (continuing from the cached inputs) -> split
x, B, C -> SSD scan from the cached state -> gated RMSNorm -> out_proj.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from skillsoup.models import ops


def state_shapes(config) -> tuple[tuple[int, ...], tuple[int, ...]]:
    d = int(config.expand * config.hidden_size)
    conv_dim = d + 2 * config.n_groups * config.state_size
    return (conv_dim, config.conv_kernel), (config.num_heads, config.head_dim, config.state_size)


def _gated_norm(norm, y, gate):  # MambaRMSNormGated with norm_before_gate=False
    y = ops.upcast(y) * F.silu(ops.upcast(gate))
    *lead, d = y.shape
    groups = y.view(*lead, d // norm.group_size, norm.group_size)
    groups = groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + norm.variance_epsilon)
    return norm.weight * groups.view(*lead, d).to(norm.weight.dtype)


def _split(mixer, projected):
    d, conv_dim = mixer.intermediate_size, mixer.conv_dim
    return projected.split([d, conv_dim, mixer.num_heads], dim=-1)  # gate, xBC, dt


def forward(mixer, hidden, conv_state, ssm_state, impl, log_decay=None, lengths=None):
    """hidden [b, l, hidden] -> (out, conv_state [b, conv_dim, k], ssm_state [b, h, p, n]).

    ``log_decay``: None on the normal path; a list to append this call's total log-decay per head
    to, shaped [b, h, 1, 1] to broadcast against the ssm state (decay mixing, skillsoup.models.chunks).
    ``lengths``: None, or [b] int64: tokens of row r after lengths[r] are padding (see
    :func:`skillsoup.models.mamba1.forward`); needs a zero lower dt limit (:func:`pads_exactly`)."""
    bsz, l, _ = hidden.shape
    dtype = hidden.dtype
    gate, xbc, dt = _split(mixer, mixer.in_proj(hidden))  # [b, l, d], [b, l, conv_dim], [b, l, h]
    conv_in = xbc.transpose(1, 2)
    xbc, conv_state_out = impl.causal_conv1d(
        conv_in, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, conv_state, activation=mixer.activation,
    )
    if lengths is not None:
        if not pads_exactly(mixer):
            raise ValueError(f"padding needs a zero lower dt limit, this model has {tuple(mixer.time_step_limit)}")
        conv_state_out = ops.conv_window_at(conv_state, conv_in, lengths)
        dt = ops.padding_is_noop(dt, lengths)
    gn = mixer.n_groups * mixer.ssm_state_size
    x, B, C = torch.split(xbc.transpose(1, 2), [mixer.intermediate_size, gn, gn], dim=-1)
    A = -torch.exp(ops.upcast(mixer.A_log))  # [h]
    if log_decay is not None:
        log_decay.append(ops.ssd_log_decay(dt, A, mixer.dt_bias, True, tuple(mixer.time_step_limit))[..., None, None])
    y, ssm_state = impl.ssd_scan(
        x.reshape(bsz, l, mixer.num_heads, mixer.head_dim), dt, A,
        B.reshape(bsz, l, mixer.n_groups, -1), C.reshape(bsz, l, mixer.n_groups, -1), D=mixer.D,
        dt_bias=mixer.dt_bias, dt_softplus=True, dt_limit=tuple(mixer.time_step_limit),
        initial_states=ssm_state,
    )  # [b, l, h, p]
    y = _gated_norm(mixer.norm, y.reshape(bsz, l, -1), gate)
    return mixer.out_proj(y.to(dtype)), conv_state_out.float(), ssm_state


def pads_exactly(mixer) -> bool:
    """Padded tokens leave a Mamba-2 state unchanged only when dt may be 0 (dt is clamped from below)."""
    return float(tuple(mixer.time_step_limit)[0]) <= 0.0


def step(mixer, hidden, conv_state, ssm_state, impl, inplace: bool = False):
    """One token. hidden [b, hidden] -> (out [b, hidden], conv_state, ssm_state). ``inplace``: a
    fused step may write the new states over the given ones (the caller owns them)."""
    fused = getattr(impl, "mamba2_step", None)  # the whole step in one kernel call (cpu_steps.py)
    if fused is not None and (done := fused(mixer, hidden, conv_state, ssm_state, inplace)) is not None:
        return done
    bsz = hidden.shape[0]
    dtype = hidden.dtype
    gate, xbc, dt = _split(mixer, mixer.in_proj(hidden))  # [b, d], [b, conv_dim], [b, h]
    conv_state = torch.cat([conv_state[..., 1:], xbc.float()[..., None]], dim=-1)
    xbc = (conv_state * mixer.conv1d.weight.squeeze(1).float()).sum(-1)
    if mixer.conv1d.bias is not None:
        xbc = xbc + mixer.conv1d.bias.float()
    xbc = F.silu(xbc).to(dtype)
    gn = mixer.n_groups * mixer.ssm_state_size
    x, B, C = torch.split(xbc, [mixer.intermediate_size, gn, gn], dim=-1)
    rep = mixer.num_heads // mixer.n_groups
    B = B.reshape(bsz, mixer.n_groups, -1).repeat_interleave(rep, dim=1)  # [b, h, n]
    C = C.reshape(bsz, mixer.n_groups, -1).repeat_interleave(rep, dim=1)
    y, ssm_state = impl.ssd_state_update(
        ssm_state, x.reshape(bsz, mixer.num_heads, mixer.head_dim), dt, -torch.exp(mixer.A_log.float()),
        B, C, D=mixer.D, dt_bias=mixer.dt_bias, dt_softplus=True, dt_limit=tuple(mixer.time_step_limit),
    )
    y = _gated_norm(mixer.norm, y.reshape(bsz, -1), gate)
    return mixer.out_proj(y.to(dtype)), conv_state, ssm_state


def step_inplace(mixer, hidden, conv_state, ssm_state, decode, A):
    """:func:`step` writing the new conv window and SSM state into ``conv_state`` / ``ssm_state``
    (see :func:`skillsoup.models.mamba1.step_inplace`). Returns out [b, hidden]."""
    bsz = hidden.shape[0]
    dtype = hidden.dtype
    gate, xbc, dt = _split(mixer, mixer.in_proj(hidden))  # [b, d], [b, conv_dim], [b, h]
    xbc = decode.conv_step_(conv_state, xbc, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, "silu")  # as step
    gn = mixer.n_groups * mixer.ssm_state_size
    x, B, C = torch.split(xbc, [mixer.intermediate_size, gn, gn], dim=-1)
    y = decode.ssd_state_update_(
        ssm_state, x.reshape(bsz, mixer.num_heads, mixer.head_dim), dt, A, B.reshape(bsz, mixer.n_groups, -1),
        C.reshape(bsz, mixer.n_groups, -1), D=mixer.D, dt_bias=mixer.dt_bias, dt_softplus=True,
        dt_limit=tuple(mixer.time_step_limit),
    )
    y = _gated_norm(mixer.norm, y.reshape(bsz, -1), gate)
    return mixer.out_proj(y.to(dtype))
