"""kernels/causal_conv1d.py: the conv continuing from its [b, c, k] cache against F.conv1d on
cat(cache, x)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="the kernels need triton: pip install -e .[dev]")

import skillsoup_kernels  # noqa: E402
from kernel_cases import DTYPE_IDS, TOL, assert_close, randn  # noqa: E402

from skillsoup.models import ops  # noqa: E402

SHAPES = [  # b, c, l, k
    pytest.param(1, 7, 1, 4, id="decode-one-token"),
    pytest.param(2, 5, 2, 4, id="l-shorter-than-k"),
    pytest.param(2, 7, 9, 4, id="odd-c-odd-l"),
    pytest.param(1, 3, 70, 2, id="k2-two-l-blocks"),
    pytest.param(1, 70, 5, 3, id="k3-two-c-blocks"),
]
DTYPES = [pytest.param(dt, id=DTYPE_IDS[dt]) for dt in (torch.float32, torch.bfloat16)]


@pytest.mark.parametrize("initial", [False, True], ids=["zero-start", "from-cache"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b, c, l, k", SHAPES)
def test_causal_conv1d_matches_ref(device, b, c, l, k, dtype, initial):
    # x as Mamba-2 passes it: a [b, c, l] view of a [b, l, c] tensor (channels contiguous)
    x = randn(b, l, c, dtype=dtype, device=device).transpose(1, 2)
    weight, bias = randn(c, k, dtype=dtype, device=device), randn(c, dtype=dtype, device=device)
    cache = randn(b, c, k, device=device) if initial else None  # states are float32
    out, final = skillsoup_kernels.causal_conv1d(x, weight, bias, cache, activation="silu")
    out_ref, final_ref = skillsoup_kernels.causal_conv1d_ref(x, weight, bias, cache, activation="silu")
    assert out.dtype == final.dtype == dtype
    assert_close("conv out", out, out_ref, TOL[dtype])
    assert_close("conv final state", final, final_ref, TOL[dtype])


@pytest.mark.parametrize("activation", [None, "silu"], ids=["linear", "silu"])
def test_causal_conv1d_without_bias(device, activation):
    x = randn(2, 6, 5, device=device)
    weight, cache = randn(6, 4, device=device), randn(2, 6, 4, device=device)
    out, final = skillsoup_kernels.causal_conv1d(x, weight, None, cache, activation=activation)
    out_ref, final_ref = skillsoup_kernels.causal_conv1d_ref(x, weight, None, cache, activation=activation)
    assert_close("conv out", out, out_ref, TOL[torch.float32])
    assert_close("conv final state", final, final_ref, TOL[torch.float32])


def test_causal_conv1d_chunks_chain(device):
    """Running 3 + 1 + 8 tokens through the cache equals one pass (the cache carries the history)."""
    x, weight, bias = randn(1, 5, 12, device=device), randn(5, 4, device=device), randn(5, device=device)
    whole, cache_all = skillsoup_kernels.causal_conv1d(x, weight, bias, None, "silu")
    pieces, cache = [], None
    for lo, hi in ((0, 3), (3, 4), (4, 12)):
        out, cache = skillsoup_kernels.causal_conv1d(x[..., lo:hi], weight, bias, cache, "silu")
        pieces.append(out)
    assert_close("chained conv", torch.cat(pieces, dim=-1), whole, TOL[torch.float32])
    assert_close("chained cache", cache, cache_all, TOL[torch.float32])
    assert torch.equal(ops.conv_state_to_causal_conv1d(cache), cache[..., 1:])  # the one convention bridge


def test_causal_conv1d_rejects_unknown_activation(device):
    with pytest.raises(ValueError, match="activation"):
        skillsoup_kernels.causal_conv1d(randn(1, 2, 3, device=device), randn(2, 4, device=device), activation="relu")


def test_causal_conv1d_empty_input_keeps_the_cache(device):
    cache = randn(2, 5, 4, device=device)
    out, final = skillsoup_kernels.causal_conv1d(randn(2, 5, 0, device=device), randn(5, 4, device=device), None, cache)
    assert out.shape == (2, 5, 0)
    assert torch.equal(final, cache)
