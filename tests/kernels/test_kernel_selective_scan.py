"""kernels/selective_scan.py: the Mamba-1 scan from a given state against the token-by-token reference.

Shapes are tiny on purpose: the interpreter runs tl.associative_scan one element at a time.
"""

from __future__ import annotations

import importlib

import pytest
import torch

pytest.importorskip("triton", reason="the kernels need triton: pip install -e .[dev]")

import skillsoup_kernels  # noqa: E402
from kernel_cases import DTYPE_IDS, TOL, assert_close, randn, strided  # noqa: E402

SHAPES = [  # b, d, l, n
    pytest.param(1, 4, 1, 4, id="one-token"),
    pytest.param(1, 5, 19, 4, id="odd-d-two-tiles"),
    pytest.param(2, 3, 9, 3, id="batch2-odd-n"),
    pytest.param(1, 2, 33, 8, id="three-tiles-n8"),
]
DTYPES = [pytest.param(dt, id=DTYPE_IDS[dt]) for dt in (torch.float32, torch.bfloat16)]


def _inputs(b, d, l, n, dtype, device, dt_scale=1.0):
    """Arguments as mamba1.py passes them: B and C are [b, n, l] views of [b, l, n] tensors."""
    return dict(
        u=randn(b, d, l, dtype=dtype, device=device),
        delta=randn(b, d, l, dtype=dtype, device=device, scale=dt_scale),
        A=-torch.rand(d, n, device=device) * 3 - 0.1,  # [d, n] float32, negative
        B=randn(b, l, n, dtype=dtype, device=device).transpose(1, 2),
        C=randn(b, l, n, dtype=dtype, device=device).transpose(1, 2),
        D=randn(d, dtype=dtype, device=device),
        z=randn(b, d, l, dtype=dtype, device=device),
        delta_bias=randn(d, dtype=dtype, device=device, scale=0.5) - 1.0,
        delta_softplus=True,
    )


def _check(args, dtype, name="selective_scan"):
    y, h = skillsoup_kernels.selective_scan(**args)
    y_ref, h_ref = skillsoup_kernels.selective_scan_ref(**args)
    assert y.dtype == h.dtype == torch.float32
    assert_close(f"{name} y", y, y_ref, TOL[dtype])
    assert_close(f"{name} final state", h, h_ref, TOL[dtype])


@pytest.mark.parametrize("initial", [False, True], ids=["zero-start", "from-state"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b, d, l, n", SHAPES)
def test_selective_scan_matches_ref(device, b, d, l, n, dtype, initial):
    args = _inputs(b, d, l, n, dtype, device)
    if initial:
        args["initial_state"] = randn(b, d, n, device=device)  # states are float32
    _check(args, dtype)


def test_selective_scan_strided_inputs(device):
    args = _inputs(2, 3, 11, 4, torch.float32, device)
    for key in ("u", "delta", "z"):
        args[key] = strided(args[key])
    args["initial_state"] = strided(randn(2, 3, 4, device=device))
    _check(args, torch.float32, "strided")


def test_selective_scan_without_optional_inputs(device):
    args = _inputs(1, 3, 7, 4, torch.float32, device)
    for key in ("D", "z", "delta_bias"):
        args[key] = None
    args["delta"] = args["delta"].abs()  # raw step sizes, no softplus
    args["delta_softplus"] = False
    _check(args, torch.float32, "bare")


def test_selective_scan_strong_decay_stays_finite(device):
    """dt * A near -150 per token: products of decays underflow to 0 instead of exp(+x) overflowing."""
    args = _inputs(1, 3, 20, 4, torch.float32, device, dt_scale=30.0)
    args["initial_state"] = randn(1, 3, 4, device=device)
    _check(args, torch.float32, "strong decay")


def test_selective_scan_split_equals_whole(device):
    """Scanning 7 tokens, then 6 more from the returned state, equals scanning all 13 at once."""
    args = _inputs(1, 3, 13, 4, torch.float32, device)
    y_all, h_all = skillsoup_kernels.selective_scan(**args)
    cut = {k: (v[..., :7] if k in ("u", "delta", "z", "B", "C") else v) for k, v in args.items()}
    rest = {k: (v[..., 7:] if k in ("u", "delta", "z", "B", "C") else v) for k, v in args.items()}
    y1, h1 = skillsoup_kernels.selective_scan(**cut)
    y2, h2 = skillsoup_kernels.selective_scan(**rest, initial_state=h1)
    assert_close("split y", torch.cat([y1, y2], dim=-1), y_all, TOL[torch.float32])
    assert_close("split state", h2, h_all, TOL[torch.float32])


@pytest.mark.parametrize("tile", [4, 32], ids=["tile4", "tile32"])
def test_selective_scan_other_tile_lengths(device, monkeypatch, tile):
    """The tile length bench_gpu.py sweeps: results do not depend on it (l = 37 crosses tiles)."""
    monkeypatch.setattr(importlib.import_module("skillsoup_kernels.selective_scan"), "TOKENS_PER_TILE", tile)
    args = _inputs(1, 3, 37, 4, torch.float32, device)
    args["initial_state"] = randn(1, 3, 4, device=device)
    _check(args, torch.float32, f"tile {tile}")


def test_selective_scan_padding_leaves_the_state_exactly(device, monkeypatch):
    """Tokens whose softplus(dt + bias) is 0 (how padded reads mask them) change nothing, bit for bit
    (one tile length for both runs, so the same additions happen in the same order)."""
    monkeypatch.setattr(importlib.import_module("skillsoup_kernels.selective_scan"), "TOKENS_PER_TILE", 4)
    args = _inputs(1, 3, 6, 4, torch.float32, device)
    args["initial_state"] = randn(1, 3, 4, device=device)
    y, h = skillsoup_kernels.selective_scan(**args)
    padded = dict(args)
    for key in ("u", "delta", "z", "B", "C"):
        extra = torch.zeros_like(args[key][..., :5]) + (-1.0e4 if key == "delta" else 1.0)
        padded[key] = torch.cat([args[key], extra], dim=-1)
    y_pad, h_pad = skillsoup_kernels.selective_scan(**padded)
    assert torch.equal(h_pad, h)
    assert torch.equal(y_pad[..., :6], y)
