"""kernels/ssd_scan.py: Mamba-2 prefill from a state (mamba-ssm's chunked scan on CUDA when it imports,
else skillsoup's Triton chunked scan) against the token-by-token reference, on odd shapes and across
chunk boundaries (the kernel's chunk is 64 tokens below 128 state dims, 32 at 128)."""

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
    pytest.param(1, 64, 2, 4, 1, 4, id="one-full-chunk-l64"),
    pytest.param(2, 129, 3, 20, 3, 6, id="l129-past-two-chunks-p20"),
    pytest.param(1, 33, 2, 16, 1, 128, id="n128-chunk32-l33"),
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


def test_triton_chunk_scan_is_the_path_without_mamba_ssm(device, monkeypatch):
    """Where mamba-ssm is missing (the lent GPU machine, CI) ssd_scan runs the Triton kernel."""
    module = importlib.import_module("skillsoup_kernels.ssd_scan")  # the package exports a function of that name

    if module.mamba_chunk_scan() is not None:
        pytest.skip("mamba-ssm is installed: it takes the CUDA path")
    calls = []
    monkeypatch.setattr(module, "ssd_chunk_scan", lambda *a, **k: calls.append(1) or module.ops.ssd_scan(*a, **k))
    x = randn(1, 5, 2, 4, device=device)
    module.ssd_scan(x, randn(1, 5, 2, device=device), -torch.ones(2, device=device), randn(1, 5, 1, 4, device=device),
                    randn(1, 5, 1, 4, device=device))
    assert calls == [1]
