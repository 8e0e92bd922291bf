"""kernels/decode_step.py and the in-place state updates: each against its PyTorch specification in
skillsoup.models.step_ops, on odd shapes, both dtypes, and written in place."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="the kernels need triton: pip install -e .[dev]")

import skillsoup_kernels  # noqa: E402
from kernel_cases import DTYPE_IDS, TOL, assert_close, randn, strided  # noqa: E402

from skillsoup.models import step_ops  # noqa: E402

DTYPES = [pytest.param(dt, id=DTYPE_IDS[dt]) for dt in (torch.float32, torch.bfloat16)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b, c, k", [(1, 5, 4), (3, 70, 4), (2, 33, 3), (2, 300, 4)],
                         ids=["b1-c5", "odd-b3-c70", "k3", "two-blocks-c300"])
def test_conv_step_matches_ref(device, b, c, k, dtype):
    state = randn(b, c, k, device=device)
    x, w, bias = randn(b, c, dtype=dtype, device=device), randn(c, k, dtype=dtype, device=device), randn(
        c, dtype=dtype, device=device)
    want_state = state.clone()
    want = step_ops.conv_step_(want_state, x, w, bias, "silu")
    got = skillsoup_kernels.conv_step_(state, x, w, bias, "silu")
    assert got.dtype == dtype
    assert_close("conv step out", got, want, TOL[dtype])
    assert torch.equal(state, want_state), "the window is shifted and x appended, in place, exactly"


def test_conv_step_bare_and_strided(device):
    state, w = randn(2, 9, 4, device=device), strided(randn(9, 4, device=device))
    x = strided(randn(2, 9, device=device))
    want_state = state.clone()
    want = step_ops.conv_step_(want_state, x, w, None, None)
    got = skillsoup_kernels.conv_step_(state, x, w, None, None)
    assert_close("bare conv step", got, want, TOL[torch.float32])
    assert torch.equal(state, want_state)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("has_out, residual_in_fp32, cast_input",
                         [(False, True, True), (True, True, True), (True, False, True), (True, True, False)],
                         ids=["layer0", "layer", "bf16-residual", "final-norm"])
@pytest.mark.parametrize("H", [8, 37, 300])
def test_add_rms_norm_matches_ref(device, dtype, has_out, residual_in_fp32, cast_input, H):
    out = randn(3, H, dtype=dtype, device=device) if has_out else None
    hidden = randn(3, H, dtype=torch.float32 if (has_out and residual_in_fp32) else dtype, device=device, scale=30)
    w = randn(H, dtype=dtype, device=device)
    res, normed = skillsoup_kernels.add_rms_norm(hidden, out, w, 1e-5, residual_in_fp32, cast_input)
    res_ref, normed_ref = step_ops.add_rms_norm(hidden, out, w, 1e-5, residual_in_fp32, cast_input)
    assert (res.dtype, normed.dtype) == (res_ref.dtype, normed_ref.dtype)
    assert_close("residual", res, res_ref, TOL[dtype] if res.dtype != torch.float32 else 1e-7)
    assert_close("normed", normed, normed_ref, TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_selective_state_update_in_place(device, dtype):
    b, d, n = 3, 13, 5
    state = randn(b, d, n, device=device)
    args = dict(x=randn(b, d, dtype=dtype, device=device), dt=randn(b, d, dtype=dtype, device=device),
                A=-torch.rand(d, n, device=device) * 3 - 0.1, B=randn(b, n, dtype=dtype, device=device),
                C=randn(b, n, dtype=dtype, device=device), D=randn(d, dtype=dtype, device=device),
                z=randn(b, d, dtype=dtype, device=device), dt_bias=randn(d, dtype=dtype, device=device) - 1.0,
                dt_softplus=True, out_dtype=dtype)
    want_state = state.clone()
    want = step_ops.selective_state_update_(want_state, **args)
    got = skillsoup_kernels.decode_ops.selective_state_update_(state, **args)
    assert got.dtype == dtype
    assert_close("y", got, want, TOL[dtype])
    assert_close("state, in place", state, want_state, TOL[torch.float32])


@pytest.mark.parametrize("heads, groups", [(4, 1), (6, 2), (4, 4)], ids=["g1", "g2-of-6", "per-head"])
def test_ssd_state_update_in_place_with_groups(device, heads, groups):
    b, p, n = 2, 5, 4
    state = randn(b, heads, p, n, device=device)
    args = dict(x=randn(b, heads, p, device=device), dt=randn(b, heads, device=device),
                A=-torch.rand(heads, device=device) - 0.1, B=randn(b, groups, n, device=device),
                C=randn(b, groups, n, device=device), D=randn(heads, device=device),
                dt_bias=randn(heads, device=device), dt_softplus=True, dt_limit=(0.0, 5.0))
    want_state = state.clone()
    want = step_ops.ssd_state_update_(want_state, **args)
    got = skillsoup_kernels.decode_ops.ssd_state_update_(state, **args)
    assert_close("y", got, want, TOL[torch.float32])
    assert_close("state, in place", state, want_state, TOL[torch.float32])


def test_in_place_updates_refuse_a_state_they_cannot_write(device):
    state = randn(2, 3, 4, device=device).transpose(1, 2)  # not contiguous
    with pytest.raises(ValueError, match="contiguous float32"):
        skillsoup_kernels.decode_ops.selective_state_update_(
            state, randn(2, 4, device=device), randn(2, 4, device=device), -torch.ones(4, 3, device=device),
            randn(2, 3, device=device), randn(2, 3, device=device))
