"""Compile every kernel for a CUDA GPU on a machine without one (run by test_kernel_compile.py).

The interpreter checks what the kernels compute, not that Triton's compiler accepts them. This
script points Triton at a stand-in CUDA driver that reports an sm_90 (H100/H200) target, calls the
real wrappers on mamba-2.8b / mamba2-130m shapes with each kernel replaced by ``kernel.warmup`` (which
compiles with the launch's exact arguments and launches nothing), and prints one line per variant:
warps, registers and spilled bytes from the cubin when cuobjdump is at hand.

    python tests/kernels/compile_check.py [--arch 90]     (TRITON_INTERPRET must be unset)
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


class StandInCudaDriver:
    """What JITFunction.run asks the active driver for before compiling; nothing is launched."""

    def __init__(self, arch: int):
        from triton.backends.compiler import GPUTarget

        self.target = GPUTarget("cuda", arch, 32)

    def get_current_device(self):
        return 0

    def get_current_stream(self, device=None):
        return 0

    def get_current_target(self):
        return self.target


class CompileOnly:
    """Stands in for a kernel: ``kernel[grid](...)`` compiles that launch and records the result."""

    def __init__(self, kernel, case: str, results: list):
        self.kernel, self.case, self.results = kernel, case, results

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            start = time.perf_counter()
            compiled = self.kernel.warmup(*args, grid=grid, **kwargs)
            self.results.append((self.kernel.fn.__name__, self.case, grid, compiled, time.perf_counter() - start))

        return launch


def _resources(cubin: bytes) -> str:
    tool = Path(sys.modules["triton"].__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    if not tool.exists() and shutil.which("cuobjdump") is None:
        return "cuobjdump not found"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        out = subprocess.run([str(tool if tool.exists() else "cuobjdump"), "--dump-resource-usage", f.name],
                             capture_output=True, text=True).stdout
    found = re.search(r"REG:(\d+).*?LOCAL:(\d+)", out)
    return f"{found.group(1)} registers, {found.group(2)} bytes spilled" if found else "resources unknown"


def cases():
    """(module, kernel attribute, case name, call): realistic shapes, so block sizes are the GPU's."""
    bf, e = torch.bfloat16, torch.empty
    d, n, l, k = 5120, 16, 512, 4  # mamba-2.8b: d_inner, d_state, a 512-token query, conv width
    h, p, n2 = 24, 64, 128  # mamba2-130m: heads, head dim, d_state

    def scan(m, dt, full):
        bc = [e(1, l, n, dtype=dt).transpose(1, 2) for _ in range(2)]  # [b, n, l] views, as mamba1.py passes them
        extra = (e(d, dtype=dt), e(1, d, l, dtype=dt), e(d, dtype=dt), True, e(1, d, n)) if full else ()
        return m.selective_scan(e(1, d, l, dtype=dt), e(1, d, l, dtype=dt), e(d, n), *bc, *extra)

    def conv(m, dt, length, full):
        x = e(1, length, d, dtype=dt).transpose(1, 2)  # [b, c, l] view of [b, l, c], as mamba2.py passes it
        return m.causal_conv1d(x, e(d, k, dtype=dt), *((e(d, dtype=dt), e(1, d, k), "silu") if full else ()))

    def step1(m):
        return m.selective_state_update(e(1, d, n), e(1, d, dtype=bf), e(1, d, dtype=bf), e(d, n), e(1, n, dtype=bf),
                                        e(1, n, dtype=bf), e(d, dtype=bf), e(1, d, dtype=bf), e(d, dtype=bf), True)

    def step2(m):
        return m.ssd_state_update(e(1, h, p, n2), e(1, h, p, dtype=bf), e(1, h, dtype=bf), e(h), e(1, h, n2, dtype=bf),
                                  e(1, h, n2, dtype=bf), e(h, dtype=bf), e(h, dtype=bf), True, (0.0, float("inf")))

    return [
        ("mix", "_mix_kernel", "fp32 K=8 (8 states)", lambda m: m.mix_states([e(64, d, n)] * 8, [0.125] * 8)),
        ("mix", "_mix_kernel", "bf16 K=9 (with a base)", lambda m: m.mix_states([e(d, n, dtype=bf)] * 9, [0.1] * 9)),
        ("selective_scan", "_selective_scan_kernel", "bf16, D z bias softplus, from state", lambda m: scan(m, bf, True)),
        ("selective_scan", "_selective_scan_kernel", "fp32, bare, zero start", lambda m: scan(m, torch.float32, False)),
        ("causal_conv1d", "_causal_conv1d_kernel", "bf16, bias, cache, silu", lambda m: conv(m, bf, l, True)),
        ("causal_conv1d", "_causal_conv1d_kernel", "fp32 one token, no cache", lambda m: conv(m, torch.float32, 1, False)),
        ("selective_state_update", "_selective_state_update_kernel", "bf16, D z bias softplus", step1),
        ("ssd_state_update", "_ssd_state_update_kernel", "bf16, D bias softplus, dt limit", step2),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="compile skillsoup_kernels for a CUDA target without a GPU")
    parser.add_argument("--arch", type=int, default=90, help="compute capability, e.g. 90 for H100/H200, 80 for A100")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") == "1":
        sys.exit("unset TRITON_INTERPRET: the interpreter never calls the compiler")
    from triton.runtime.driver import driver

    driver.set_active(StandInCudaDriver(args.arch))
    common = importlib.import_module("skillsoup_kernels._common")
    common.interpreting = lambda: True  # let the wrappers accept CPU tensors: only dtypes and strides matter
    results: list = []
    for module_name, attr, case, call in cases():
        module = importlib.import_module(f"skillsoup_kernels.{module_name}")
        real = getattr(module, attr)
        setattr(module, attr, CompileOnly(real, case, results))
        try:
            call(module)
        finally:
            setattr(module, attr, real)
    for name, case, grid, compiled, seconds in results:
        print(f"sm_{args.arch}  {name:32s} {case:42s} grid {str(grid):16s} {compiled.metadata.num_warps} warps, "
              f"{_resources(compiled.asm['cubin'])} ({seconds:.1f} s)")
    return 0 if len(results) == len(cases()) else 1


if __name__ == "__main__":
    sys.exit(main())
