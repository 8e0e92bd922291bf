"""Mamba-1 mixer with explicit state, on the weights of a Hugging Face ``MambaMixer``.

Reads top to bottom like the paper's block: in_proj -> causal conv (continuing from the cached
inputs) -> x_proj to (dt, B, C) -> selective scan (continuing from the cached SSM state) -> gate
-> out_proj. Shapes are end-of-line comments; names follow ``ops.py``'s glossary.
"""

from __future__ import annotations

import torch

from skillsoup.models import ops


def state_shapes(config) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-row (conv, ssm) state shapes of one layer."""
    d = config.intermediate_size
    return (d, config.conv_kernel), (d, config.state_size)


def _split_xproj(mixer, x):  # x [b, l, d] after conv
    dt_rank, n = mixer.time_step_rank, mixer.ssm_state_size
    dt, B, C = torch.split(mixer.x_proj(x), [dt_rank, n, n], dim=-1)  # [b, l, r], [b, l, n], [b, l, n]
    dt = dt @ mixer.dt_proj.weight.t()  # [b, l, d], bias added inside the scan (as mamba-ssm does)
    return dt, B, C


def forward(mixer, hidden, conv_state, ssm_state, impl, log_decay=None):
    """hidden [b, l, hidden] -> (out [b, l, hidden], conv_state [b, d, k], ssm_state [b, d, n]).

    ``log_decay``: None on the normal path; a list to append this call's total log-decay to
    ([b, d, n], A * sum dt), which decay mixing needs (skillsoup.models.chunks)."""
    dtype = hidden.dtype
    x, gate = mixer.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)  # [b, d, l] each
    x, conv_state = impl.causal_conv1d(
        x, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, conv_state, activation=mixer.activation
    )  # [b, d, l]
    dt, B, C = _split_xproj(mixer, x.transpose(1, 2))
    A = -torch.exp(mixer.A_log.float())  # [d, n]
    if log_decay is not None:
        log_decay.append(ops.selective_scan_log_decay(dt.transpose(1, 2), A, mixer.dt_proj.bias, True))
    y, ssm_state = impl.selective_scan(
        x, dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D=mixer.D, z=gate,
        delta_bias=mixer.dt_proj.bias, delta_softplus=True, initial_state=ssm_state,
    )  # [b, d, l]
    return mixer.out_proj(y.transpose(1, 2).to(dtype)), conv_state.float(), ssm_state


def step(mixer, hidden, conv_state, ssm_state, impl):
    """One token. hidden [b, hidden] -> (out [b, hidden], conv_state, ssm_state)."""
    fused = getattr(impl, "mamba1_step", None)  # the whole step in one kernel call (cpu_steps.py)
    if fused is not None and (done := fused(mixer, hidden, conv_state, ssm_state)) is not None:
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
