"""Benchmarks run by hand; here only a tiny-shape run so they do not rot."""

from __future__ import annotations

import sys
from pathlib import Path

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


def test_bench_serve_runs_on_a_tiny_load(capsys):
    import bench_serve

    rows = bench_serve.main(["--in-process", "--embedder", "hash:64", "--skills", "date-us,sentiment", "--levels", "1,2",
                             "--per-client", "2", "--min-requests", "2", "--max-tokens", "8"])
    out = capsys.readouterr().out
    assert [r["clients"] for r in rows] == [1, 2] and all(r["tok_s"] > 0 and r["requests"] >= 2 for r in rows)
    assert "| 2 | 4 |" in out and "load average" in out and "x one at a time" in out
