"""The router benchmarks run on tiny shapes so they do not rot. (The examples run on the demo model
and the bundled skills in tests/demo/test_examples.py.)"""

from __future__ import annotations

import os
import sys

from registry_helpers import REPO


def test_bench_router_runs_on_tiny_shapes(capsys, mamba_dir):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_router

    rows = bench_router.main(["--skills", "60", "--demos", "3", "--embedder", "hash:64", "--queries", "3",
                              "--answers", "1", "--new-tokens", "2", "--model", str(mamba_dir)])
    out = capsys.readouterr().out
    names = [name for name, _, _ in rows]
    assert {"route[max, onnx] route", "route[classifier, ref] route", "answer first_token_ms"} <= set(names)
    assert all(p50 >= 0 and p95 >= p50 for _, p50, p95 in rows)
    assert "60 skills x 3 demonstrations" in out and "| route[max, ref] embed" in out
    assert "| classifier     | route  |" in out and "ref / onnx (p50)" in out  # the ratio table
    assert "SKILLSOUP_EMBED_IMPL" not in os.environ  # the benchmark leaves the setting as it found it


def test_bench_routing_fit_runs_on_a_small_set(capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_routing_fit

    result = bench_routing_fit.main(["--embedder", "hash:64", "--train", "150", "--test", "40", "--latency-sample", "3"])
    out = capsys.readouterr().out
    assert result["after"]["fitted"] and not result["before"]["fitted"]
    assert "| macro_f1 |" in out and "baseline (nn-threshold)" in out
