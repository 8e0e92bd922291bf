"""Backward-friendly twins of ``skillsoup.models.ops``' Mamba-1 block scans, for training the demo model.

``ops._scan_block`` / ``ops._scan_block_doubling`` compute the right values, but under autograd on CPU
  * the factored form divides by E = exp(A * cumsum(dt)); the backward of ``x / E`` divides by E**2,
    which underflows to 0 in float32 once E < exp(-44) (ops allows E down to exp(-60)), so every
    gradient becomes NaN from the first step of training;
  * the loop over chunk boundaries selects ``local[:, :, c, -1]`` from the full [b, d, nc, t, n]
    tensor once per chunk; each select's backward allocates and zero-fills a tensor of that full size,
    so the backward costs O(chunks x size) (about half of a training step here).
The twins below compute the same values (same formulas, same chunking) but multiply by exp(-log E)
instead of dividing by E, take the chunk-final states in one select and walk them with ``unbind``.
:func:`training_scan` swaps them in while it is active and caps the per-chunk log-decay at 30 so
exp(-log E) <= e^30 keeps every gradient finite. These belong in ops.py; until then training uses
them through this context manager, and tests/demo checks them against ``selective_scan_ref``.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from skillsoup.models import ops

TRAIN_MAX_LOG_DECAY = 30.0


def _pad_chunks(delta, dtu, B, C, t):
    l = delta.shape[-1]
    pad = -l % t
    if pad:  # zero delta and input: padded tokens leave the state unchanged
        delta, dtu, B, C = (F.pad(x, (0, pad)) for x in (delta, dtu, B, C))
    return delta, dtu, B, C, (l + pad) // t


def scan_block(h, delta, dtu, A, B, C, t):
    """Twin of ``ops._scan_block`` (same contract). delta, dtu [b, d, l]; B, C [b, n, l]."""
    l = delta.shape[-1]
    delta, dtu, B, C, nc = _pad_chunks(delta, dtu, B, C, t)
    delta_c, dtu_c = delta.unflatten(-1, (nc, t)), dtu.unflatten(-1, (nc, t))  # [b, d, nc, t]
    B_c, C_c = B.unflatten(-1, (nc, t)), C.unflatten(-1, (nc, t))  # [b, n, nc, t]
    rel = torch.cumsum(delta_c, dim=-1) - delta_c[..., :1]  # [b, d, nc, t]
    log_e = rel.unsqueeze(-1) * A[:, None, None, :]  # [b, d, nc, t, n], in [-TRAIN_MAX_LOG_DECAY, 0]
    E = torch.exp(log_e)
    inputs = dtu_c.unsqueeze(-1) * B_c.permute(0, 2, 3, 1).unsqueeze(1)  # [b, d, nc, t, n]
    local = torch.cumsum(inputs * torch.exp(-log_e), dim=3) * E  # chunk-local states from zero
    first = torch.exp(delta_c[..., 0].unsqueeze(-1) * A[:, None, :])  # [b, d, nc, n]
    carry = first * E[:, :, :, -1]  # decay of a chunk's start state across the whole chunk
    starts = []
    for last_c, carry_c in zip(local[:, :, :, -1].unbind(2), carry.unbind(2)):  # chunk boundaries only
        starts.append(h)
        h = last_c + carry_c * h
    start = torch.stack(starts, dim=2) * first  # [b, d, nc, n]
    states = local + E * start.unsqueeze(3)  # [b, d, nc, t, n]
    y = torch.einsum("bdctn,bnct->bdct", states, C_c).flatten(2)[..., :l]
    return y, h


def scan_block_doubling(h, delta, dtu, A, B, C, t):
    """Twin of ``ops._scan_block_doubling`` (same contract and Hillis-Steele steps)."""
    l = delta.shape[-1]
    delta, dtu, B, C, nc = _pad_chunks(delta, dtu, B, C, t)
    decay = torch.exp(delta.unflatten(-1, (nc, t)).unsqueeze(-1) * A[:, None, None, :])  # [b, d, nc, t, n]
    x = dtu.unflatten(-1, (nc, t)).unsqueeze(-1) * B.unflatten(-1, (nc, t)).permute(0, 2, 3, 1).unsqueeze(1)
    step = 1
    while step < t:
        x = torch.cat([x[:, :, :, :step], torch.addcmul(x[:, :, :, step:], decay[:, :, :, step:], x[:, :, :, :-step])], 3)
        decay = torch.cat([decay[:, :, :, :step], decay[:, :, :, step:] * decay[:, :, :, :-step]], 3)
        step *= 2
    starts = []
    for x_c, decay_c in zip(x[:, :, :, -1].unbind(2), decay[:, :, :, -1].unbind(2)):
        starts.append(h)
        h = torch.addcmul(x_c, decay_c, h)
    states = torch.addcmul(x, decay, torch.stack(starts, dim=2).unsqueeze(3))
    y = torch.einsum("bdctn,bnct->bdct", states, C.unflatten(-1, (nc, t))).flatten(2)[..., :l]
    return y, h


@contextlib.contextmanager
def training_scan():
    """Within this block, ``ops.selective_scan`` (and so ``StateModel.forward_with_grad``) uses the
    backward-friendly twins. Values are unchanged; only gradients become finite and cheaper."""
    saved = ops._scan_block, ops._scan_block_doubling, ops._MAX_LOG_DECAY
    ops._scan_block, ops._scan_block_doubling = scan_block, scan_block_doubling
    ops._MAX_LOG_DECAY = min(saved[2], TRAIN_MAX_LOG_DECAY)
    try:
        yield
    finally:
        ops._scan_block, ops._scan_block_doubling, ops._MAX_LOG_DECAY = saved
