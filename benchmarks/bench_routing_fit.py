"""Fitted router vs the unfitted one vs the nearest-neighbour-threshold baseline, on held-out queries
of the synthetic routing task of the tests (tests/routing/synthetic.py: 8 skills with their own
vocabularies; 30% of queries labelled null: unrelated words, or words of three skills at once).

    python benchmarks/bench_routing_fit.py                      # all-MiniLM-L6-v2, 1,500 train / 600 held out
    python benchmarks/bench_routing_fit.py --embedder hash:256  # the tests' hashing embedder
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "routing"))

KEYS = ("in_scope_accuracy", "abstain_recall", "abstain_precision", "macro_f1", "ece", "p50_ms", "p95_ms")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", default="all-MiniLM-L6-v2")
    parser.add_argument("--train", type=int, default=1500)
    parser.add_argument("--test", type=int, default=600)
    parser.add_argument("--latency-sample", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch
    from synthetic import make_labelled, make_skills

    from skillsoup.registry import SkillRegistry
    from skillsoup.routing import Router, evaluate, fit

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fit-"))
    model_dir = tmp / "model"
    import importlib.util

    spec = importlib.util.spec_from_file_location("bench_registry", Path(__file__).with_name("bench_registry.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from skillsoup import load_model

    model = load_model(module.build_demo_model(model_dir))  # states are needed to add skills, not to route
    with SkillRegistry.open(tmp / "reg", embedder=args.embedder) as reg:
        reg.add(make_skills(), model)
        router = Router(reg)
        test = make_labelled(args.test, seed=2)
        before = evaluate(router, test, latency_sample=args.latency_sample)
        t0 = time.perf_counter()
        report = fit(router, make_labelled(args.train, seed=1))
        fit_s = time.perf_counter() - t0
        after = evaluate(router, test, latency_sample=args.latency_sample)
    load = os.getloadavg()[0]
    print(f"\nsynthetic routing task, embedder {args.embedder}, {args.train} training / {args.test} held-out queries; "
          f"load average {load:.1f} on {os.cpu_count()} cores")
    print(f"fit: {fit_s:.1f} s ({report.embed_seconds:.1f} s embedding the queries), policy {report.params.policy}, "
          f"threshold {report.params.threshold:.3f}, temperature {report.params.temperature:.3g}, "
          f"{len(report.params.skill_thresholds)} per-skill thresholds")
    columns = {"unfitted (max, 0.3)": before, f"fitted ({after['policy']})": after, "baseline (nn-threshold)": after["baseline"]}
    print("| metric | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for key in KEYS:
        print(f"| {key} | " + " | ".join("-" if c[key] is None else f"{c[key]:.3f}" for c in columns.values()) + " |")
    return {"before": before, "after": after, "fit_seconds": fit_s}


if __name__ == "__main__":
    main()
