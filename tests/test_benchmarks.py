"""Benchmarks run by hand; here only a tiny-shape run so they do not rot."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))


def test_bench_state_runs_on_tiny_shapes(capsys):
    import bench_state

    rows = bench_state.main(["--demo-tokens", "24", "--query-tokens", "4", "--new-tokens", "2", "--layers", "1",
                             "--hidden", "32", "--vocab", "64", "--repeat", "1", "--threads", "1", "--force",
                             "--max-load", "-1"])
    out = capsys.readouterr().out
    assert len(rows) == 10 and {r.arch for r in rows} == {"mamba", "mamba2"}
    assert all(r.ours > 0 and r.base > 0 and (r.floor is None or r.floor > 0) for r in rows)
    assert "| mamba2 | 1 | (c) capture 24 tokens" in out and "WARNING: the machine is busy" in out
    for part in out.split("relative logit difference ")[1:]:
        assert float(part.split()[0]) < 1e-4


def test_bench_state_refuses_a_busy_machine():
    import bench_state
    import pytest

    with pytest.raises(SystemExit, match="the machine is busy"):
        bench_state.main(["--max-load", "-1"])
