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
Precision: everything is computed in float32, except that float64 inputs stay float64 (a float64
model then runs a float64 reference of itself: ``skillsoup.models.precision``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# exp(+-60) stays far from float32 overflow (exp(88.7)); chunks whose decay exceeds it are split.
_MAX_LOG_DECAY = 60.0
_MAX_LOG_DECAY_GRAD = 30.0
# below this chunk size the factored form loses to the doubling scan, which is stable for any decay
_MIN_FACTORED_CHUNK = 16
_DOUBLING_CHUNK = 16


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def upcast(t: torch.Tensor) -> torch.Tensor:
    """``t`` in the compute dtype: float32, or float64 kept as it is."""
    return t if t.dtype == torch.float64 else t.float()


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


def conv_window_at(initial_states, x, lengths):
    """The conv state after row r's first ``lengths[r]`` inputs: what ``causal_conv1d`` returns
    as final_states when the rest of x is padding. initial_states [b, c, k], x [b, c, l] (the conv's
    input), lengths [b] int64 -> [b, c, k] in x's dtype."""
    b, c, k = initial_states.shape
    full = torch.cat([initial_states.to(x.dtype), x], dim=-1)  # [b, c, k + l]
    index = (lengths.view(b, 1, 1) + torch.arange(k, device=x.device)).expand(b, c, k)
    return full.gather(-1, index)


# a step size whose softplus (and clamp from below at 0) is exactly 0 in float32: exp(-1e4) == 0
_PAD_DT = -1.0e4


def padding_is_noop(dt, lengths):
    """dt [b, l, ...] (before its bias and softplus) with the tokens at or after ``lengths[r]`` set
    so that softplus(dt + bias) is exactly 0: their decay is exp(0) = 1 and their input dt * x * B
    is 0, so a padded token leaves the SSM state exactly as it was."""
    position = torch.arange(dt.shape[1], device=dt.device)
    pad = (position[None, :] >= lengths[:, None]).view(*dt.shape[:2], *([1] * (dt.dim() - 2)))
    return dt.masked_fill(pad, _PAD_DT)


def conv_state_to_causal_conv1d(conv_state):
    """HF keeps k columns, causal-conv1d's initial_states keeps k-1: the one place we convert."""
    return conv_state[..., 1:]


# ---- Mamba-1 selective scan ----------------------------------------------------------------------
def _prep_delta(delta, delta_bias, delta_softplus, channel_dim=-2):
    delta = upcast(delta)
    if delta_bias is not None:  # bias is per channel d: [b, d, l] needs it as [d, 1], [b, d] as [d]
        delta = delta + (upcast(delta_bias)[..., None] if channel_dim == -2 else upcast(delta_bias))
    return F.softplus(delta) if delta_softplus else delta


def selective_scan(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None,
    chunk_size=64, block_size=256,
):
    """Mamba-1 selective scan from ``initial_state``, exact and parallel within chunks.

    u, delta, z [b, d, l]; A [d, n]; B, C [b, n, l]; D, delta_bias [d]; initial_state [b, d, n]
    -> (y [b, d, l], final_state [b, d, n]) in float32.

    In a chunk of T tokens the decay from s to t is exp(A * (cum_t - cum_s)), cum = cumsum(delta),
    so the chunk's own contribution is E_t * cumsum_s(u_s / E_s) with E = exp(A * cum): one exp
    over [b, d, t, n], everything else multiplies. T is the largest power of two <= chunk_size for
    which E cannot underflow (so 1/E cannot overflow). Where a block has decays so fast that T
    would drop below 16, that block uses a log-depth doubling scan over chunks of 16 instead
    (products of decays only, stable for any dt). A Python loop runs over chunk boundaries only,
    carrying the small [b, d, n] state. Tokens go in blocks of ``block_size`` to bound memory.
    """
    bsz, d, l = u.shape
    delta = _prep_delta(delta, delta_bias, delta_softplus)  # [b, d, l]
    A = upcast(A)
    dtu = delta * upcast(u)
    h = u.new_zeros(bsz, d, A.shape[-1], dtype=_compute_dtype(u)) if initial_state is None else initial_state.to(_compute_dtype(u))
    a_max = A.detach().abs().amax(-1)  # [d], fastest decay per channel
    ys = []
    for start in range(0, l, block_size):
        end = min(start + block_size, l)
        t = _safe_chunk_size(delta[:, :, start:end], a_max, chunk_size)
        scan = _scan_block if t >= _MIN_FACTORED_CHUNK else _scan_block_doubling
        y, h = scan(h, delta[:, :, start:end], dtu[:, :, start:end], A, upcast(B[:, :, start:end]),
                    upcast(C[:, :, start:end]), t if t >= _MIN_FACTORED_CHUNK else _DOUBLING_CHUNK)
        ys.append(y)
    y = torch.cat(ys, dim=-1) if ys else u.new_zeros(bsz, d, 0, dtype=_compute_dtype(u))
    if D is not None:
        y = y + upcast(u) * upcast(D)[:, None]
    if z is not None:
        y = y * F.silu(upcast(z))
    return y, h


def _safe_chunk_size(delta, a_max, chunk_size):
    """Largest power of two T <= chunk_size such that every chunk's decay, counted from its first
    token, stays within exp(-limit): _MAX_LOG_DECAY, or _MAX_LOG_DECAY_GRAD under autograd (the
    backward multiplies by exp(-log E) once more)."""
    limit = _MAX_LOG_DECAY_GRAD if torch.is_grad_enabled() else _MAX_LOG_DECAY
    l = delta.shape[-1]
    rate = upcast(delta.detach() * a_max[:, None])  # [b, d, l] log-decay per token, fastest state
    t = 1 << max(0, min(chunk_size, l) - 1).bit_length()
    while t > 1:
        padded = F.pad(rate, (0, -l % t)).unflatten(-1, (-1, t))  # [b, d, nc, t]
        if float((padded.sum(-1) - padded[..., 0]).max()) <= limit:
            break
        t //= 2
    return t


def _scan_block(h, delta, dtu, A, B, C, t):
    """Scan one block from state h in chunks of t tokens. delta, dtu [b, d, l]; B, C [b, n, l]."""
    bsz, d, l = delta.shape
    pad = -l % t
    if pad:  # zero delta and input: padded tokens leave the state unchanged
        delta, dtu, B, C = (F.pad(x, (0, pad)) for x in (delta, dtu, B, C))
    nc = (l + pad) // t
    delta_c, dtu_c = delta.unflatten(-1, (nc, t)), dtu.unflatten(-1, (nc, t))  # [b, d, nc, t]
    B_c, C_c = B.unflatten(-1, (nc, t)), C.unflatten(-1, (nc, t))  # [b, n, nc, t]
    rel = torch.cumsum(delta_c, dim=-1) - delta_c[..., :1]  # [b, d, nc, t], from the chunk's first token
    log_e = rel.unsqueeze(-1) * A[:, None, None, :]  # [b, d, nc, t, n], in [-60, 0]
    E = torch.exp(log_e)
    inputs = dtu_c.unsqueeze(-1) * B_c.permute(0, 2, 3, 1).unsqueeze(1)  # [b, d, nc, t, n]
    if torch.is_grad_enabled():  # training: multiply by exp(-log E), whose backward never divides by E^2
        local = torch.cumsum(inputs * torch.exp(-log_e), dim=3) * E
    else:
        local = torch.cumsum(inputs.div_(E), dim=3).mul_(E)  # chunk-local states from zero
    first = torch.exp(delta_c[..., 0].unsqueeze(-1) * A[:, None, :])  # [b, d, nc, n], first token's decay
    carry = first * E[:, :, :, -1]  # decay of a chunk's start state across the whole chunk
    starts = []
    # one select of the chunk ends, then unbind: a per-chunk select would cost a full-size
    # zero-filled gradient per chunk in the backward
    for end, decay in zip(local[:, :, :, -1].unbind(2), carry.unbind(2)):  # chunk boundaries only
        starts.append(h)
        h = end + decay * h
    start = torch.stack(starts, dim=2) * first  # [b, d, nc, n], start states decayed by token 0
    states = local + E * start.unsqueeze(3)  # h_t for every token  [b, d, nc, t, n]
    y = torch.einsum("bdctn,bnct->bdct", states, C_c).flatten(2)[..., :l]  # [b, d, l]
    return y, h


def _scan_block_doubling(h, delta, dtu, A, B, C, t):
    """Same contract as :func:`_scan_block`, by a Hillis-Steele scan inside chunks of t tokens:
    log2(t) steps that compose (decay, input) pairs, so no division and no overflow."""
    bsz, d, l = delta.shape
    pad = -l % t
    if pad:
        delta, dtu, B, C = (F.pad(x, (0, pad)) for x in (delta, dtu, B, C))
    nc = (l + pad) // t
    decay = torch.exp(delta.unflatten(-1, (nc, t)).unsqueeze(-1) * A[:, None, None, :])  # [b, d, nc, t, n]
    x = dtu.unflatten(-1, (nc, t)).unsqueeze(-1) * B.unflatten(-1, (nc, t)).permute(0, 2, 3, 1).unsqueeze(1)
    step = 1
    while step < t:  # after the loop: x = chunk-local states from zero, decay = cumulative decay
        x = torch.cat([x[:, :, :, :step], torch.addcmul(x[:, :, :, step:], decay[:, :, :, step:], x[:, :, :, :-step])], 3)
        decay = torch.cat([decay[:, :, :, :step], decay[:, :, :, step:] * decay[:, :, :, :-step]], 3)
        step *= 2
    starts = []
    for end, carry in zip(x[:, :, :, -1].unbind(2), decay[:, :, :, -1].unbind(2)):  # chunk boundaries only
        starts.append(h)
        h = torch.addcmul(end, carry, h)
    states = torch.addcmul(x, decay, torch.stack(starts, dim=2).unsqueeze(3))  # [b, d, nc, t, n]
    y = torch.einsum("bdctn,bnct->bdct", states, C.unflatten(-1, (nc, t))).flatten(2)[..., :l]
    return y, h


def selective_scan_ref(
    u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, initial_state=None,
    chunk_size=64,
):
    """Specification of :func:`selective_scan`: the recurrence, one token at a time."""
    del chunk_size
    delta = _prep_delta(delta, delta_bias, delta_softplus)
    bsz, d, l = u.shape
    h = u.new_zeros(bsz, d, A.shape[-1], dtype=_compute_dtype(u)) if initial_state is None else initial_state.to(_compute_dtype(u))
    ys = []
    for t in range(l):
        dA = torch.exp(delta[:, :, t, None] * upcast(A))  # [b, d, n]
        h = dA * h + (delta[:, :, t] * upcast(u[:, :, t]))[..., None] * upcast(B[:, None, :, t])
        ys.append((h * upcast(C[:, None, :, t])).sum(-1))
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(bsz, d, 0)
    if D is not None:
        y = y + upcast(u) * upcast(D)[:, None]
    if z is not None:
        y = y * F.silu(upcast(z))
    return y, h


def selective_scan_log_decay(delta, A, delta_bias=None, delta_softplus=False):
    """Total log-decay of a Mamba-1 scan over its l tokens, A * sum_t delta_t -> [b, d, n] float32.

    delta [b, d, l] is prepared exactly as :func:`selective_scan` prepares it; exp of the result
    carries a state from before the tokens to after them (decay mixing, ``skillsoup.models.chunks``).
    """
    return _prep_delta(delta, delta_bias, delta_softplus).sum(-1)[..., None] * upcast(A)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False):
    """One Mamba-1 decode step. state [b, d, n], x/dt/z [b, d], B/C [b, n] -> (y [b, d], new state).
    Mirrors mamba-ssm's selective_state_update (which updates in place; this returns a new state)."""
    dt = _prep_delta(dt, dt_bias, dt_softplus, channel_dim=-1)
    new_state = torch.exp(dt[..., None] * upcast(A)) * upcast(state) + (dt * upcast(x))[..., None] * upcast(B)[:, None, :]
    y = (new_state * upcast(C)[:, None, :]).sum(-1)
    if D is not None:
        y = y + upcast(x) * upcast(D)
    if z is not None:
        y = y * F.silu(upcast(z))
    return y, new_state


# ---- Mamba-2 (SSD) chunked scan ----------------------------------------------------------------
def _prep_dt2(dt, dt_bias, dt_softplus, dt_limit):
    dt = upcast(dt)
    if dt_bias is not None:
        dt = dt + upcast(dt_bias)
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
    xf = upcast(x)
    Bh = upcast(B).repeat_interleave(nh // g, dim=2)  # [b, l, h, n]
    Ch = upcast(C).repeat_interleave(nh // g, dim=2)
    h = x.new_zeros(bsz, nh, hp, n, dtype=_compute_dtype(x)) if initial_states is None else initial_states.to(_compute_dtype(x))
    ys = []
    for start in range(0, l, chunk_size):
        end = min(start + chunk_size, l)
        xdt = xf[:, start:end] * dt[:, start:end, :, None]  # [b, t, h, p]
        a = (dt[:, start:end] * upcast(A)).transpose(1, 2)  # [b, h, t], log decays
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
        y = y + xf * upcast(D)[:, None]
    return y, h


def ssd_scan_ref(
    x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf")),
    initial_states=None, chunk_size=64,
):
    """Specification of :func:`ssd_scan`: the recurrence, one token at a time."""
    del chunk_size
    bsz, l, nh, hp = x.shape
    g = B.shape[2]
    h = x.new_zeros(bsz, nh, hp, B.shape[3], dtype=_compute_dtype(x)) if initial_states is None else initial_states.to(_compute_dtype(x))
    ys = []
    for t in range(l):
        y, h = ssd_state_update(
            h, x[:, t], dt[:, t], A,
            B[:, t].repeat_interleave(nh // g, dim=1), C[:, t].repeat_interleave(nh // g, dim=1),
            D, dt_bias, dt_softplus, dt_limit,
        )
        ys.append(y)
    y = torch.stack(ys, dim=1) if ys else x.new_zeros(bsz, 0, nh, hp, dtype=_compute_dtype(x))
    return y, h


def ssd_log_decay(dt, A, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf"))):
    """Total log-decay of a Mamba-2 scan per head, A_h * sum_t dt_t -> [b, h] float32.
    dt [b, l, h] is prepared exactly as :func:`ssd_scan` prepares it (bias, softplus, clamp)."""
    return _prep_dt2(dt, dt_bias, dt_softplus, dt_limit).sum(1) * upcast(A)


def ssd_state_update(state, x, dt, A, B, C, D=None, dt_bias=None, dt_softplus=False, dt_limit=(0.0, float("inf"))):
    """One Mamba-2 decode step. state [b, h, p, n], x [b, h, p], dt [b, h], B/C [b, h, n] (per head)
    -> (y [b, h, p], new state). Mirrors mamba-ssm's selective_state_update for Mamba-2 shapes."""
    dt = _prep_dt2(dt, dt_bias, dt_softplus, dt_limit)  # [b, h]
    decay = torch.exp(dt * upcast(A))[..., None, None]  # [b, h, 1, 1]
    new_state = decay * upcast(state) + (dt[..., None] * upcast(x))[..., None] * upcast(B)[:, :, None, :]
    y = torch.einsum("bhpn,bhn->bhp", new_state, upcast(C))
    if D is not None:
        y = y + upcast(x) * upcast(D)[:, None]
    return y, new_state
