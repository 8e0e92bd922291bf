"""skillsoup.models.precision: a float64 twin of a model and each path's error against it; the
reference ops keep float64 inputs in float64."""

from __future__ import annotations

import pytest
import torch

from skillsoup import load_model
from skillsoup.models import ops
from skillsoup.models.precision import compare, float64_twin, mamba1_op_errors, verdict


@pytest.fixture(scope="module")
def model(mamba_dir):
    return load_model(mamba_dir, impl="ref")


def test_ops_keep_float64():
    g = torch.Generator().manual_seed(0)
    u, delta, z = (torch.randn(1, 3, 20, generator=g, dtype=torch.float64) for _ in range(3))
    A = -torch.rand(3, 4, generator=g, dtype=torch.float64) - 0.5
    B, C = (torch.randn(1, 4, 20, generator=g, dtype=torch.float64) for _ in range(2))
    y, h = ops.selective_scan(u, delta, A, B, C, z=z, delta_softplus=True)
    y_ref, h_ref = ops.selective_scan_ref(u, delta, A, B, C, z=z, delta_softplus=True)
    assert y.dtype == h.dtype == torch.float64
    assert float((y - y_ref).abs().max()) < 1e-12 and float((h - h_ref).abs().max()) < 1e-12
    y32, _ = ops.selective_scan(u.float(), delta.float(), A.float(), B.float(), C.float(), z=z.float(),
                                delta_softplus=True)
    assert y32.dtype == torch.float32


def test_float64_twin_runs_in_float64_and_agrees(model):
    twin = float64_twin(model)
    ids = torch.randint(3, 90, (2, 12), generator=torch.Generator().manual_seed(1))
    trace = []
    logits64, _ = twin.backend.forward(ids, twin.empty_state(2), "all", trace=trace)
    assert all(t.dtype == torch.float64 for t in trace) and len(trace) == model.num_layers
    logits32, _ = model.forward(ids)
    torch.testing.assert_close(logits32.double(), logits64.double(), rtol=1e-4, atol=1e-4)
    assert model.hf.lm_head.weight.dtype == torch.float32, "the twin is a copy"


def test_compare_reports_every_path_and_layer(model):
    g = torch.Generator().manual_seed(2)
    demos, query = torch.randint(3, 90, (2, 16), generator=g), torch.randint(3, 90, (2, 8), generator=g)
    errors = compare(model, model, demos, query)
    assert set(errors) == {"kernels", "reference", "reference, injected"}
    for e in errors.values():
        assert 0 < e.logits < 1e-5 and len(e.layers) == model.num_layers
    # the same ops from the same captured state: the "kernel" path here is the reference, injected
    assert errors["kernels"].logits == errors["reference, injected"].logits
    assert verdict(errors, limit=1e-4) == {"<= 2x reference": True, "<= 0.0001": True}
    assert verdict(errors, limit=1e-12)["<= 1e-12"] is False


def test_op_errors_are_float32_rounding(model):
    twin = float64_twin(model)
    ids = torch.randint(3, 90, (1, 20), generator=torch.Generator().manual_seed(3))
    errors = mamba1_op_errors(model, twin, ids, layer=1, impl=ops)
    assert set(errors) == {"in_proj (GEMM)", "causal conv + silu", "x_proj, dt_proj (GEMMs)",
                           "selective scan (+D, gate)", "out_proj (GEMM)"}
    assert all(0 <= e < 1e-5 for e in errors.values()), errors
