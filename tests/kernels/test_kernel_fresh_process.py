"""When this pytest process cannot interpret Triton kernels (triton was imported before
TRITON_INTERPRET=1 was set), the CPU kernel tests skip; this runs them in a fresh process instead,
so a full-suite run never loses them silently."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kernel_cases import interpreter_ready


def test_kernel_tests_pass_in_a_fresh_process():
    pytest.importorskip("triton", reason="the kernels need triton: pip install -e .[dev]")
    if torch.cuda.is_available() or interpreter_ready():
        pytest.skip("the kernel tests run in this process")
    env = dict(os.environ, TRITON_INTERPRET="1")
    here = Path(__file__).parent
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(here)],
                          capture_output=True, text=True, env=env, cwd=here.parents[1], timeout=900)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
