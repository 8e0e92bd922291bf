"""kernels/ssd_scan.py: Mamba-2 prefill from a state (mamba-ssm's chunked scan on CUDA when it imports,
else ops.ssd_scan) against the token-by-token reference."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytest.importorskip("triton", reason="the kernels need triton: pip install -e .[dev]")

import skillsoup_kernels  # noqa: E402
from kernel_cases import DTYPE_IDS, assert_close, randn  # noqa: E402

SHAPES = [  # b, l, h, p, g, n
    pytest.param(1, 1, 2, 4, 1, 4, id="one-token"),
    pytest.param(2, 37, 4, 3, 2, 5, id="odd-l37-two-groups"),
    pytest.param(1, 70, 2, 8, 1, 16, id="two-chunks-n16"),
]
DTYPES = [pytest.param(dt, id=DTYPE_IDS[dt]) for dt in (torch.float32, torch.bfloat16)]
SSD_TOL = {torch.float32: 1e-4, torch.bfloat16: 2e-2}  # chunked vs sequential; mamba-ssm keeps y in bf16


@pytest.mark.parametrize("initial", [False, True], ids=["zero-start", "from-state"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b, l, h, p, g, n", SHAPES)
def test_ssd_scan_matches_ref(device, b, l, h, p, g, n, dtype, initial):
    args = dict(
        x=randn(b, l, h, p, dtype=dtype, device=device),
        dt=randn(b, l, h, dtype=dtype, device=device),
        A=-torch.rand(h, device=device) * 3 - 0.1,
        B=randn(b, l, g, n, dtype=dtype, device=device),
        C=randn(b, l, g, n, dtype=dtype, device=device),
        D=randn(h, dtype=dtype, device=device),
        dt_bias=randn(h, dtype=dtype, device=device, scale=0.5) - 1.0,
        dt_softplus=True,
        dt_limit=(0.0, float("inf")),
        initial_states=randn(b, h, p, n, device=device) if initial else None,
    )
    y, final = skillsoup_kernels.ssd_scan(**args)
    y_ref, final_ref = skillsoup_kernels.ssd_scan_ref(**args)
    assert y.dtype == final.dtype == torch.float32
    assert_close("ssd y", y, y_ref, SSD_TOL[dtype])
    assert_close("ssd final state", final, final_ref, SSD_TOL[dtype])


def test_mamba_ssm_detection_matches_what_imports():
    """Detected once; None wherever mamba-ssm is not installed (always on the CPU machine)."""
    if importlib.util.find_spec("mamba_ssm") is None:
        assert skillsoup_kernels.mamba_chunk_scan() is None
    assert skillsoup_kernels.mamba_chunk_scan() is skillsoup_kernels.mamba_chunk_scan()


@pytest.mark.gpu
def test_mamba_ssm_is_used_on_cuda_when_installed():
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("mamba_ssm", reason="mamba-ssm not installed: Mamba-2 prefill uses ops.ssd_scan")
    assert skillsoup_kernels.mamba_chunk_scan() is not None
