"""The training twins of the Mamba-1 block scans equal the reference recurrence, values and gradients."""

from __future__ import annotations

import pytest
import torch

from skillsoup.demo.train_ops import training_scan
from skillsoup.models import ops
from tests.conftest import assert_close


def _inputs(seed, dt_scale, a_scale, b=2, d=6, n=4, l=150):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64).float()  # noqa: E731
    u, delta, z = r(b, d, l), r(b, d, l) * dt_scale, r(b, d, l)
    A = -torch.rand(d, n, generator=g).float() * a_scale - 0.05
    return [t.requires_grad_() for t in (u, delta, A, r(b, n, l), r(b, n, l), r(d), z, r(d), r(b, d, n))]


@pytest.mark.parametrize(("case", "dt_scale", "a_scale", "factored"), [
    ("slow decays: factored chunks", 0.3, 0.5, True), ("fast decays: doubling scan", 4.0, 8.0, False),
])
def test_training_scan_matches_reference(case, dt_scale, a_scale, factored):
    args = _inputs(0, dt_scale, a_scale)
    u, delta, A, B, C, D, z, bias, h0 = args

    def run(fn):
        y, h = fn(u, delta, A, B, C, D=D, z=z, delta_bias=bias, delta_softplus=True, initial_state=h0)
        (y.square().mean() + h.square().mean()).backward()
        grads = [t.grad.clone() for t in args]
        for t in args:
            t.grad = None
        return y.detach(), h.detach(), grads

    with training_scan():  # the case exercises the path it names
        rate = ops._prep_delta(delta.detach(), bias.detach(), True)
        chunk = ops._safe_chunk_size(rate, A.detach().abs().amax(-1), 64)
        assert (chunk >= ops._MIN_FACTORED_CHUNK) == factored, chunk
    y_ref, h_ref, g_ref = run(ops.selective_scan_ref)
    with training_scan():
        y, h, g = run(ops.selective_scan)
    assert ops._scan_block is not None and ops._MAX_LOG_DECAY == 60.0  # restored
    assert_close(f"{case}: y", y, y_ref, 1e-5)
    assert_close(f"{case}: final state", h, h_ref, 1e-5)
    for name, a, e in zip(["u", "delta", "A", "B", "C", "D", "z", "bias", "h0"], g, g_ref):
        assert_close(f"{case}: grad {name}", a, e, 1e-4)
