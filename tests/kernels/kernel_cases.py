"""Helpers shared by the kernel tests (a plain module: conftest.py files are not importable by name).

Tolerances are relative errors ||actual - expected|| / ||expected|| (fla-style), per input dtype:
the kernels and their references both compute in float32, so float32 agrees to rounding; bfloat16
outputs (the conv) differ by an ulp of bfloat16 where the two round differently.
"""

from __future__ import annotations

import os
import sys

import torch

TOL = {torch.float32: 2e-5, torch.bfloat16: 1e-2}
DTYPE_IDS = {torch.float32: "fp32", torch.bfloat16: "bf16"}


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, ratio: float) -> None:
    """Relative error ||a - e|| / ||e|| must stay under ``ratio``; NaN (unwritten output) fails."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values (an output element was never written?)"
    err = (actual - expected).norm() / expected.norm().clamp_min(1e-12)
    assert err <= ratio, f"{name}: relative error {err:.3e} > {ratio:.1e}"


def strided(t: torch.Tensor) -> torch.Tensor:
    """The same values in a non-contiguous view (every other element of a wider buffer)."""
    buf = torch.full((*t.shape[:-1], 2 * t.shape[-1]), float("nan"), dtype=t.dtype, device=t.device)
    buf[..., ::2] = t
    view = buf[..., ::2]
    assert not view.is_contiguous() or t.shape[-1] <= 1
    return view


def randn(*shape, dtype=torch.float32, device="cpu", scale=1.0) -> torch.Tensor:
    return (torch.randn(*shape, dtype=torch.float32) * scale).to(device=device, dtype=dtype)


def interpreter_ready() -> bool:
    """Whether Triton kernels can run on CPU in this process. Triton picks compiled or interpreted when
    a ``@triton.jit`` function is defined, i.e. when triton (its own tl.sum is one) and skillsoup_kernels
    are imported: TRITON_INTERPRET=1 must have been set before both."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        return False
    for module, attr in (("triton.language.standard", "sum"), ("skillsoup_kernels._common", "softplus")):
        loaded = sys.modules.get(module)
        if loaded is not None and type(getattr(loaded, attr)).__name__ != "InterpretedFunction":
            return False
    return True
