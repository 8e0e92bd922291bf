"""Benchmarks run by hand; here only a tiny-shape run so they do not rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_bench_state_runs_on_tiny_shapes(capsys):
    import bench_state

    rows = bench_state.main(["--demo-tokens", "24", "--query-tokens", "4", "--new-tokens", "2", "--layers", "1",
                             "--hidden", "32", "--vocab", "64", "--repeat", "1"])
    out = capsys.readouterr().out
    assert len(rows) == 5 and all(ours > 0 and base > 0 for _, ours, base, _ in rows)
    assert "relative logit difference" in out and "| (c) capture 24 tokens" in out
    diff = float(out.split("relative logit difference ")[1].split()[0])
    assert diff < 1e-4


def test_bench_mix_runs_on_tiny_shapes(capsys):
    import bench_mix

    rows = bench_mix.main(["--shapes", "tiny", "--reps", "1", "--device", "cpu"])
    assert len(rows) == 4 and all(seconds > 0 for _, _, seconds, _ in rows)
    assert "| tiny: 8 x" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_gpu_dry_run_walks_every_row():
    """bench_gpu.py runs once per lent GPU session (scripts/gpu_check.sh): its CPU dry run (the
    Triton interpreter, static buffers without graphs) must reach every row."""
    pytest.importorskip("triton")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, TRITON_INTERPRET="1", OMP_NUM_THREADS="1")
    done = subprocess.run([sys.executable, "benchmarks/bench_gpu.py", "--dry-run", "--sweep-tiles", ""],
                          capture_output=True, text=True, env=env, cwd=root, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for row in ("| mix 8 flat states", "| prefill 8 tokens", "| TTFT: skill", "| decode tok/s, batch 1 (generate",
                "| decode tok/s, batch 2 (rows", "| capture 16 tokens", "| GPU ops / host launches",
                "| end-to-end answer, 2 skills resident", "| end-to-end answer, 2 skills from pinned host",
                "| equal: float32 vs float64"):
        assert row in done.stdout, f"{row!r} missing from the table"


def test_gpu_exactness_reference_path_on_cpu(capsys, tmp_path):
    import gpu_exactness

    out = tmp_path / "exact.md"
    code = gpu_exactness.main(["--cpu", "--hidden", "32", "--layers", "2", "--rows", "1", "--demo-tokens", "8",
                               "--query-tokens", "4", "--out", str(out)])
    text = out.read_text()
    assert code == 0 and "| reference | " in text and "| selective scan (+D, gate) | 1 |" in text
    assert "### mamba2 hidden 32 x 2 layers" in capsys.readouterr().out
