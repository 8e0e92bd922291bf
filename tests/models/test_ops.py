"""Each parallel op equals its sequential specification, from a given initial state."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close

from skillsoup.models import ops

RATIO = 2e-5


def _mamba1_inputs(b, d, n, l, dt_scale, seed, contiguous=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    u, delta, z = r(b, d, l), r(b, d, l) * dt_scale, r(b, d, l)
    if not contiguous:  # same values, transposed storage
        u, z = u.transpose(1, 2).contiguous().transpose(1, 2), z.transpose(1, 2).contiguous().transpose(1, 2)
    A = -torch.exp(r(d, n))
    return dict(u=u, delta=delta, A=A, B=r(b, n, l), C=r(b, n, l), D=r(d), z=z, delta_bias=r(d),
                delta_softplus=True, initial_state=r(b, d, n))


@pytest.mark.parametrize(
    "b,d,n,l,dt_scale,chunk,contiguous",
    [(1, 3, 2, 1, 1.0, 64, True), (2, 5, 4, 17, 1.0, 4, True), (2, 7, 16, 130, 1.0, 64, False),
     (1, 4, 3, 40, 30.0, 64, True)],  # large dt: chunks must split to avoid exp overflow
    ids=["one-token", "odd-dims-small-chunks", "noncontiguous-130", "huge-decay"],
)
def test_selective_scan_matches_recurrence(b, d, n, l, dt_scale, chunk, contiguous):
    kw = _mamba1_inputs(b, d, n, l, dt_scale, seed=l, contiguous=contiguous)
    y, h = ops.selective_scan(**kw, chunk_size=chunk)
    y_ref, h_ref = ops.selective_scan_ref(**kw)
    assert_close("y", y, y_ref, RATIO)
    assert_close("final state", h, h_ref, RATIO)


def test_selective_scan_split_equals_whole():
    kw = _mamba1_inputs(2, 6, 4, 50, 1.0, seed=3)
    y, h = ops.selective_scan(**kw)
    cut = 21
    first = {k: (v[..., :cut] if torch.is_tensor(v) and v.dim() == 3 and v.shape[-1] == 50 else v) for k, v in kw.items()}
    y1, h1 = ops.selective_scan(**first)
    second = {k: (v[..., cut:] if torch.is_tensor(v) and v.dim() == 3 and v.shape[-1] == 50 else v) for k, v in kw.items()}
    second["initial_state"] = h1
    y2, h2 = ops.selective_scan(**second)
    assert_close("y", torch.cat([y1, y2], -1), y, RATIO)
    assert_close("h", h2, h, RATIO)


@pytest.mark.parametrize("l,chunk,groups", [(1, 64, 1), (17, 8, 2), (100, 32, 1)], ids=["one", "chunked-groups", "100"])
def test_ssd_scan_matches_recurrence(l, chunk, groups):
    g = torch.Generator().manual_seed(l)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    b, h, p, n = 2, 4, 3, 5
    kw = dict(x=r(b, l, h, p), dt=r(b, l, h), A=-torch.exp(r(h)), B=r(b, l, groups, n), C=r(b, l, groups, n), D=r(h),
              dt_bias=r(h), dt_softplus=True, dt_limit=(0.0, float("inf")), initial_states=r(b, h, p, n))
    y, s = ops.ssd_scan(**kw, chunk_size=chunk)
    y_ref, s_ref = ops.ssd_scan_ref(**kw)
    assert_close("y", y, y_ref, RATIO)
    assert_close("final state", s, s_ref, RATIO)


def test_conv_continues_from_cached_inputs():
    g = torch.Generator().manual_seed(0)
    x, w, bias = torch.randn(2, 5, 30, generator=g), torch.randn(5, 4, generator=g), torch.randn(5, generator=g)
    whole, final = ops.causal_conv1d(x, w, bias, activation="silu")
    a, state = ops.causal_conv1d(x[..., :11], w, bias, activation="silu")
    b, final2 = ops.causal_conv1d(x[..., 11:], w, bias, initial_states=state, activation="silu")
    assert_close("out", torch.cat([a, b], -1), whole, 1e-6)
    assert torch.equal(final, final2) and torch.equal(final, x[..., -4:])
    assert ops.conv_state_to_causal_conv1d(final).shape == (2, 5, 3)


@pytest.mark.parametrize("path", ["_scan_block", "_scan_block_doubling"])
def test_both_block_scans_match_recurrence(path, monkeypatch):
    """Force each of the two parallel forms (factored chunks, doubling) over the same inputs."""
    chosen = []
    real = getattr(ops, path)
    monkeypatch.setattr(ops, "_MIN_FACTORED_CHUNK", 1 if path == "_scan_block" else 10**9)
    monkeypatch.setattr(ops, path, lambda *a: chosen.append(path) or real(*a))
    kw = _mamba1_inputs(2, 5, 4, 70, 0.3, seed=9)
    y, h = ops.selective_scan(**kw, chunk_size=16, block_size=32)
    y_ref, h_ref = ops.selective_scan_ref(**kw)
    assert chosen == [path] * 3  # 70 tokens in blocks of 32
    assert_close("y", y, y_ref, RATIO)
    assert_close("final state", h, h_ref, RATIO)


@pytest.mark.parametrize("dt_scale", [0.3, 30.0], ids=["factored", "doubling"])
def test_scan_gradients_are_finite_and_match_the_recurrence(dt_scale):
    """Training goes through the parallel scan: its gradients must equal the recurrence's."""
    kw = _mamba1_inputs(1, 4, 3, 40, dt_scale, seed=5)
    grads = []
    for fn in (ops.selective_scan, ops.selective_scan_ref):
        leaves = {k: v.clone().requires_grad_(True) for k, v in kw.items() if k in ("u", "delta", "A", "B")}
        y, h = fn(**{**kw, **leaves})
        (y.square().mean() + h.square().mean()).backward()
        grads.append({k: v.grad for k, v in leaves.items()})
    for k in grads[0]:
        assert_close(f"grad {k}", grads[0][k], grads[1][k], 1e-4)
