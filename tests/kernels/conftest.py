"""Kernel tests run on CUDA when present, else on CPU through Triton's interpreter.

Triton decides when a ``@triton.jit`` function is defined (at import of triton and of
``skillsoup_kernels``) whether it is compiled or interpreted. Without CUDA this file sets
TRITON_INTERPRET=1 before the kernel tests import anything. If some earlier module in this pytest
process imported triton without it, the interpreter cannot work here: the CPU tests then skip, and
test_kernel_fresh_process.py runs them all in a fresh process with TRITON_INTERPRET=1 instead.

Every test takes the ``device`` fixture: "cpu-interpreter" or "cuda" (marked ``gpu``). Every output
the kernel wrappers allocate is pre-filled with NaN (``_common.DEBUG_FILL``), so a kernel that
leaves an element unwritten fails the comparison.
"""

from __future__ import annotations

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")

from kernel_cases import interpreter_ready  # noqa: E402

DEVICES = [pytest.param("cpu", id="cpu-interpreter"), pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)]


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    pytest.importorskip("triton", reason="the kernels need triton: pip install -e .[dev]")
    interpret = os.environ.get("TRITON_INTERPRET") == "1"
    if request.param == "cuda":
        if not CUDA:
            pytest.skip("needs CUDA")
        if interpret:
            pytest.skip("TRITON_INTERPRET=1 is set: the kernels are interpreted, not compiled for CUDA")
    elif not interpret:
        pytest.skip("TRITON_INTERPRET is off (CUDA present or TRITON_INTERPRET=0): the kernels run on CUDA instead")
    elif not interpreter_ready():
        pytest.skip("triton was imported in this process before TRITON_INTERPRET=1 was set; "
                    "test_kernel_fresh_process.py runs these tests in a fresh process")
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _nan_outputs(monkeypatch):
    """Fresh kernel outputs start as NaN, so unwritten memory cannot pass a comparison."""
    try:
        import skillsoup_kernels._common as common
    except ImportError:
        return
    monkeypatch.setattr(common, "DEBUG_FILL", float("nan"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
