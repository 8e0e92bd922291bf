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

    with pytest.raises(SystemExit, match="the machine is busy"):
        bench_state.main(["--max-load", "-1"])


def test_bench_batch_decode_runs_on_tiny_shapes(capsys):
    import bench_batch_decode

    rows = bench_batch_decode.main(["--layers", "1", "--hidden", "32", "--vocab", "64", "--batches", "1,3",
                                    "--steps", "2", "--repeat", "1"])
    assert [(arch, b) for arch, b, *_ in rows] == [("mamba", 1), ("mamba", 3), ("mamba2", 1), ("mamba2", 3)]
    assert all(new > 0 and inplace > 0 for *_, new, inplace in rows)
    assert "| mamba2 | 3 |" in capsys.readouterr().out


def test_bench_mix_runs_on_tiny_shapes(capsys):
    import bench_mix

    rows = bench_mix.main(["--shapes", "tiny", "--reps", "1", "--device", "cpu"])
    assert len(rows) == 4 and all(seconds > 0 for _, _, seconds, _ in rows)
    assert "| tiny: 8 x" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_routing_real_runs_on_the_fixture(capsys, tmp_path):
    """The real-data routing benchmark end to end on Banking77-shaped CSVs written here (10 intents)."""
    import bench_routing_real

    data = tmp_path / "intent-data"
    write_intent_csvs(data / "task-specific-datasets" / "banking_data")
    results = bench_routing_real.main(["--data", str(data), "--datasets", "banking77", "--held-out", "4",
                                       "--fit-per-skill", "4", "--null-share", "0.05", "--latency-sample", "2",
                                       "--demo-tests", "0", "--no-cache", "--threads", "1"])
    out = capsys.readouterr().out
    r = results[0]
    assert r["skills"] == 6 and r["held_out"] == 4 and r["test_null"] == 12 and r["chosen"] in r["oof"]
    for key in ("unfitted", "fitted", "baseline"):
        assert 0 <= r[key]["in_scope_accuracy"] <= 1 and 0 <= r[key]["abstain_recall"] <= 1
    assert "| banking77 | 6 | fitted (" in out and "nn-threshold baseline" in out and "load average" in out


INTENTS = {  # invented intents and phrasings in Banking77's CSV layout; the real data is fetched, never committed
    "card_arrival": ("when will my new card {v}", ["arrive", "get here", "be delivered", "show up"]),
    "exchange_rate": ("what {v} do you use to convert currencies", ["rate", "exchange rate", "price", "conversion"]),
    "lost_card": ("I think I {v} my card", ["lost", "misplaced", "dropped", "can't find"]),
    "top_up_failed": ("my top up {v}", ["failed", "did not work", "was declined", "bounced"]),
    "pin_blocked": ("my PIN is {v}", ["blocked", "locked", "frozen", "not accepted"]),
    "refund_status": ("where is the refund I {v}", ["asked for", "requested", "was promised", "expected"]),
    "transfer_fee": ("is there a fee to {v} money", ["send", "transfer", "wire", "move"]),
    "change_address": ("how do I {v} my address", ["change", "update", "edit", "correct"]),
    "close_account": ("I want to {v} my account", ["close", "delete", "cancel", "shut"]),
    "cash_withdrawal": ("the ATM {v} my cash withdrawal", ["refused", "declined", "ate", "cancelled"]),
}


def write_intent_csvs(folder: Path) -> None:
    """train.csv (14 queries per intent) and test.csv (3 per intent) with columns text,category."""
    import csv

    prefixes = ["", "hi, ", "please tell me ", "quick question: ", "help! "]
    folder.mkdir(parents=True)
    for split, picks in (("train", range(14)), ("test", range(14, 17))):
        with (folder / f"{split}.csv").open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "category"])
            for intent, (pattern, words) in INTENTS.items():
                for i in picks:
                    writer.writerow([prefixes[i % 5] + pattern.format(v=words[i % 4]) + "?" * (i // 5 % 2), intent])


def test_bench_serve_runs_on_a_tiny_load(capsys):
    import bench_serve

    rows = bench_serve.main(["--in-process", "--embedder", "hash:64", "--skills", "date-us,sentiment", "--levels", "1,2",
                             "--per-client", "2", "--min-requests", "2", "--max-tokens", "8"])
    out = capsys.readouterr().out
    assert [r["clients"] for r in rows] == [1, 2] and all(r["tok_s"] > 0 and r["requests"] >= 2 for r in rows)
    # a chunk carries one token or more (the held-back tail of a stop string may add one)
    assert all(0 < r["chunks_per_answer"] <= r["tokens_per_answer"] + 1 for r in rows)
    assert "| 2 | 4 |" in out and "load average" in out and "x one at a time" in out


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
