"""Pure-PyTorch Mamba operators with explicit state in and out.

Each op takes the state to start from and returns the state it ends in, so a model can stop after
the demonstrations and continue later exactly. ``*_ref`` functions are the readable specification
(sequential over tokens, used by tests); the others are the exact parallel forms the CPU path runs.
Triton twins with the same signatures live in ``skillsoup_kernels``.

Glossary (mirrors mamba-ssm's names):
    b batch, l tokens, d channels (d_inner), n d_state, k conv width,
    h heads, p head dim, g groups (Mamba-2)
    delta / dt   the input-dependent step size, A the (negative) decay rates, B/C input/output maps
Conv state convention: ``[b, c, k]``, the last k inputs (Hugging Face's); causal-conv1d keeps k-1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# exp(+-60) stays far from float32 overflow (exp(88.7)); chunks whose decay exceeds it are split.
_MAX_LOG_DECAY = 60.0


# ---- causal depthwise conv -------------------------------------------------------------------
def causal_conv1d(x, weight, bias=None, initial_states=None, activation=None):
    """Depthwise causal conv continuing from the last k inputs.

    x [b, c, l], weight [c, k], bias [c], initial_states [b, c, k] (zeros = start of text)
    -> (out [b, c, l], final_states [b, c, k]). Mirrors causal_conv1d_fn(initial_states=...).
    """
    b, c, l = x.shape
    k = weight.shape[-1]
    if initial_states is None:
        initial_states = x.new_zeros(b, c, k)
    full = torch.cat([initial_states.to(x.dtype), x], dim=-1)  # [b, c, k + l]
    out = F.conv1d(full, weight.unsqueeze(1).to(x.dtype), bias, groups=c)[..., 1:]  # [b, c, l]
    if activation in ("silu", "swish"):
        out = F.silu(out)
    elif activation is not None:
        raise ValueError(f"unsupported conv activation {activation!r}")
    return out, full[..., -k:].clone()


causal_conv1d_ref = causal_conv1d  # F.conv1d on the concatenated history is already the spec


def conv_state_to_causal_conv1d(conv_state):
    """HF keeps k columns, causal-conv1d's initial_states keeps k-1: the one place we convert."""
    return conv_state[..., 1:]


# ---- Mamba-1 selective scan ----------------------------------------------------------------------
def _prep_delta(delta, delta_bias, delta_softplus, channel_dim=-2):
    delta = delta.float()
    if delta_bias is not None:  # bias is per channel d: [b, d, l] needs it as [d, 1], [b, d] as [d]
        delta = delta + (delta_bias.float()[..., None] if channel_dim == -2 else delta_bias.float())
    return F.softplus(delta) if delta_softplus else delta


def selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None,
    chunk_size=64,
):
    """Mamba-1 selective scan from ``initial_state``, exact and parallel within chunks.

    u, delta, z [b, d, l]; A [d, n]; B, C [b, n, l]; D, delta_bias [d]; initial_state [b, d, n]
    -> (y [b, d, l], final_state [b, d, n]) in float32.

    Within a chunk, the decay from s to t is exp(A * (cum_t - cum_s)) with cum = cumsum(delta), so
    h_t = exp(A cum_t) * (h_0 + sum_{s<=t} exp(-A cum_s) delta_s u_s B_s): two exps, one cumsum
    (cum taken from the chunk's first token).
    Chunks are short enough that exp(-A cum) cannot overflow; a Python loop runs over chunks only.
    """
    bsz, d, l = u.shape
    n = A.shape[-1]
    delta = _prep_delta(delta, delta_bias, delta_softplus)
    A = A.float()
    dtu = delta * u.float()  # [b, d, l]
    Bt = B.float().transpose(1, 2)  # [b, l, n]
    Ct = C.float().transpose(1, 2)  # [b, l, n]
    h = u.new_zeros(bsz, d, n, dtype=torch.float32) if initial_state is None else initial_state.float()
    ys: list[torch.Tensor] = []
    a_max = float(A.detach().abs().max()) if A.numel() else 0.0
    for start in range(0, l, chunk_size):
        h = _scan_span(h, delta, dtu, A, Bt, Ct, ys, start, min(start + chunk_size, l), a_max)
    y = torch.cat(ys, dim=-1) if ys else u.new_zeros(bsz, d, 0, dtype=torch.float32)
    if D is not None:
        y = y + u.float() * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y, h


def _scan_span(h, delta, dtu, A, Bt, Ct, ys, start, end, a_max):
    """Scan tokens [start, end) from h, appending their outputs to ys; returns the state after `end`.

    Decays are taken relative to the span's first token, so a one-token span never overflows."""
    cum = torch.cumsum(delta[:, :, start:end], dim=-1)  # [b, d, t]
    rel = cum - cum[..., :1]  # [b, d, t], decay exponent from the first token (0 at t = start)
    if end - start > 1 and float(rel[..., -1].detach().max()) * a_max > _MAX_LOG_DECAY:
        mid = (start + end) // 2
        h = _scan_span(h, delta, dtu, A, Bt, Ct, ys, start, mid, a_max)
        return _scan_span(h, delta, dtu, A, Bt, Ct, ys, mid, end, a_max)
    h_first = torch.exp(delta[:, :, start, None] * A) * h  # h decayed by the first token  [b, d, n]
    log_decay = rel.unsqueeze(-1) * A[:, None, :]  # [b, d, t, n], <= 0
    inputs = dtu[:, :, start:end, None] * Bt[:, None, start:end, :]  # [b, d, t, n]
    if torch.is_grad_enabled():  # training: out-of-place so autograd keeps what it needs
        states = (torch.cumsum(inputs * torch.exp(-log_decay), dim=2) + h_first[:, :, None, :]) * torch.exp(log_decay)
    else:  # inference: in place, fewer allocations
        states = torch.cumsum(inputs.mul_(torch.exp(-log_decay)), dim=2)
        states.add_(h_first[:, :, None, :]).mul_(torch.exp(log_decay))  # h_t for every t in the span
    ys.append(torch.einsum("bdtn,btn->bdt", states, Ct[:, start:end]))
    return states[:, :, -1].contiguous()


def selective_scan_ref(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None,
    chunk_size=64,
):
    """Specification of :func:`selective_scan`: the recurrence, one token at a time."""
    del chunk_size
    delta = _prep_delta(delta, delta_bias, delta_softplus)
    bsz, d, l = u.shape
    h = u.new_zeros(bsz, d, A.shape[-1], dtype=torch.float32) if initial_state is None else initial_state.float()
    ys = []
    for t in range(l):
        dA = torch.exp(delta[:, :, t, None] * A.float())  # [b, d, n]
        h = dA * h + (delta[:, :, t] * u[:, :, t].float())[..., None] * B[:, None, :, t].float()
        ys.append((h * C[:, None, :, t].float()).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(bsz, d, 0)
    if D is not None:
        y = y + u.float() * D.float()[:, None]
    if z is not None:
        y = y * F.silu(z.float())
    return y, h


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One Mamba-1 decode step. state [b, d, n], x/dt/z [b, d], B/C [b, n] -> (y [b, d], new state).
    Mirrors mamba-ssm's selective_state_update (which updates in place; this returns a new state)."""
    dt = _prep_delta(dt, dt_bias, dt_softplus, channel_dim=-1)
    new_state = torch.exp(dt[..., None] * A.float()) * state.float() + (dt * x.float())[..., None] * B.float()[:, None, :]
    y = (new_state * C.float()[:, None, :]).sum(-1)
    if D is not None:
        y = y + x.float() * D.float()
    if z is not None:
        y = y * F.silu(z.float())
    return y, new_state


# ---- Mamba-2 (SSD) chunked scan ----------------------------------------------------------------
def _prep_dt2(dt, dt_bias, dt_softplus, dt_limit):
    dt = dt.float()
    if dt_bias is not None:
        dt = dt + dt_bias.float()
    if dt_softplus:
        dt = F.softplus(dt)
    return dt.clamp(min=dt_limit[0], max=dt_limit[1])


def _segsum(x):
    """x [..., t] -> [..., t, t] with out[i, j] = sum(x[j+1..i]) for j <= i, -inf above."""
    t = x.shape[-1]
    cs = torch.cumsum(x, dim=-1)
    seg = cs[..., :, None] - cs[..., None, :]
    mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
    return seg.masked_fill(~mask, float("-inf"))


def ssd_scan(
    x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
    initial_states=None, chunk_size=64,
):
    """Mamba-2 scan from ``initial_states``: exact chunked state-space duality form.

    x [b, l, h, p], dt [b, l, h], A [h], B/C [b, l, g, n], D/dt_bias [h], initial_states [b, h, p, n]
    -> (y [b, l, h, p], final_states [b, h, p, n]) in float32.
    Mirrors mamba_chunk_scan_combined(initial_states=..., return_final_states=True).
    """
    bsz, l, nh, hp = x.shape
    g, n = B.shape[2], B.shape[3]
    dt = _prep_dt2(dt, dt_bias, dt_softplus, dt_limit)  # [b, l, h]
    xf = x.float()
    Bh = B.float().repeat_interleave(nh // g, dim=2)  # [b, l, h, n]
    Ch = C.float().repeat_interleave(nh // g, dim=2)
    h = x.new_zeros(bsz, nh, hp, n, dtype=torch.float32) if initial_states is None else initial_states.float()
    ys = []
    for start in range(0, l, chunk_size):
        end = min(start + chunk_size, l)
        xdt = xf[:, start:end] * dt[:, start:end, :, None]  # [b, t, h, p]
        a = (dt[:, start:end] * A.float()).transpose(1, 2)  # [b, h, t], log decays
        a_cum = torch.cumsum(a, dim=-1)  # [b, h, t]
        Bc, Cc = Bh[:, start:end], Ch[:, start:end]
        decay_in = torch.exp(_segsum(a))  # [b, h, t, s]
        scores = torch.einsum("bthn,bshn->bhts", Cc, Bc) * decay_in
        y_diag = torch.einsum("bhts,bshp->bthp", scores, xdt)
        y_off = torch.einsum("bthn,bhpn->bthp", Cc, h) * torch.exp(a_cum).transpose(1, 2)[..., None]
        ys.append(y_diag + y_off)
        decay_to_end = torch.exp(a_cum[..., -1:] - a_cum)  # [b, h, t]
        h = h * torch.exp(a_cum[..., -1])[..., None, None] + torch.einsum(
            "bshn,bhs,bshp->bhpn", Bc, decay_to_end, xdt
        )
    y = torch.cat(ys, dim=1) if ys else xf.new_zeros(bsz, 0, nh, hp)
    if D is not None:
        y = y + xf * D.float()[:, None]
    return y, h


def ssd_scan_ref(
    x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
    initial_states=None, chunk_size=64,
):
    """Specification of :func:`ssd_scan`: the recurrence, one token at a time."""
    del chunk_size
    bsz, l, nh, hp = x.shape
    g = B.shape[2]
    h = x.new_zeros(bsz, nh, hp, B.shape[3], dtype=torch.float32) if initial_states is None else initial_states.float()
    ys = []
    for t in range(l):
        y, h = ssd_state_update(
            h, x[:, t], dt[:, t], A,
            B[:, t].repeat_interleave(nh // g, dim=1), C[:, t].repeat_interleave(nh // g, dim=1),
            D, dt_bias, dt_softplus, dt_limit,
        )
        ys.append(y)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(bsz, 0, nh, hp, dtype=torch.float32)
    return y, h


def ssd_state_update(state, x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf"))):
    """One Mamba-2 decode step. state [b, h, p, n], x [b, h, p], dt [b, h], B/C [b, h, n] (per head)
    -> (y [b, h, p], new state). Mirrors mamba-ssm's selective_state_update for Mamba-2 shapes."""
    dt = _prep_dt2(dt, dt_bias, dt_softplus, dt_limit)  # [b, h]
    decay = torch.exp(dt * A.float())[..., None, None]  # [b, h, 1, 1]
    new_state = decay * state.float() + (dt[..., None] * x.float())[..., None] * B.float()[:, :, None, :]
    y = torch.einsum("bhpn,bhn->bhp", new_state, C.float())
    if D is not None:
        y = y + x.float() * D.float()[:, None]
    return y, new_state
