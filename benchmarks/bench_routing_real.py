"""Routing on public intent datasets, following the documented workflow: one skill file per intent
with 10 demonstrations, ``skillsoup add`` (registry adds with the bundled demo model), ``skillsoup
fit`` on a labelled set with few nulls, ``skillsoup eval routing`` on the test split. Prints, per
dataset, the unfitted router, the fitted one and the nearest-neighbour baseline: in-scope accuracy,
abstain recall, their mean (balanced), and the fit time. The protocol and how to fill the data
folder are in benchmarks/intent_data.py.

    python benchmarks/bench_routing_real.py --data ~/intent-data                  # all datasets, test splits
    python benchmarks/bench_routing_real.py --data ~/intent-data --split dev      # development: train split only
    python benchmarks/bench_routing_real.py --data ~/intent-data --datasets banking77 --objective accuracy
    python benchmarks/bench_routing_real.py --data ~/intent-data --objective accuracy@0.65   # at the goal's abstain recall
    python benchmarks/bench_routing_real.py --data ~/intent-data --tune-encoder --tune-epochs 3  # longer encoder tuning

Embeddings of the default MiniLM are cached in DATA/embeddings-<embedder>.npz (the same vectors the
registry would compute; ``--no-cache`` recomputes them), so a second run spends its time routing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

import intent_data  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


class CachedEmbedder:
    """The registry's embedder with a text -> vector cache on disk (same vectors, computed once). One
    text at a time (a single ``route`` call, as the latency columns time it) is always embedded for
    real, so that route latency includes the query encoder."""

    def __init__(self, inner, path: Path | None):
        self.inner, self.path, self.name = inner, path, inner.name
        self.cache: dict[str, np.ndarray] = {}
        self.dirty = False
        if path is not None and path.exists():
            data = np.load(path, allow_pickle=False)
            self.cache = dict(zip(json.loads(str(data["texts"])), data["vectors"]))

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def source_folder(self):  # encoder tuning starts from the inner embedder's folder
        return self.inner.source_folder

    def embed(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 1:
            return self.inner.embed(texts)
        missing = sorted({t for t in texts if t not in self.cache})
        if missing:
            self.cache.update(zip(missing, self.inner.embed(missing)))
            self.dirty = True
        return np.stack([self.cache[t] for t in texts]).astype(np.float32) if texts else self.inner.embed([])

    def flush(self) -> None:
        if self.path is not None and self.dirty:
            texts = list(self.cache)
            np.savez(self.path, texts=json.dumps(texts), vectors=np.stack([self.cache[t] for t in texts]))
            self.dirty = False


def write_skill_files(task: intent_data.Task, folder: Path) -> Path:
    from skillsoup.skills.loader import dump_skill_yaml
    from skillsoup.skills.skill import Demonstration, Skill

    folder.mkdir(parents=True)
    for name, (description, demos) in task.skills.items():
        skill = Skill(name, description, tuple(Demonstration(q, name) for q in demos))
        (folder / f"{name}.yaml").write_text(dump_skill_yaml(skill), encoding="utf-8")
    return folder


def run_dataset(name: str, args, model, embedder, tmp: Path) -> dict:
    from skillsoup.registry import SkillRegistry
    from skillsoup.routing import Router, evaluate, fit
    from skillsoup.routing.encoder_tuning import TuningSettings
    from skillsoup.routing.tune import fit_tuned
    from skillsoup.skills.loader import load_skills

    task = intent_data.make_task(intent_data.load(name, args.data), n_demos=args.demos, n_fit=args.fit_per_skill,
                                 null_share=args.null_share, n_held_out=args.held_out, split=args.split, seed=args.seed)
    folder = write_skill_files(task, tmp / name / "skills")
    with SkillRegistry.open(tmp / name / "reg", embedder=embedder) as reg:
        t0 = time.perf_counter()
        reg.add(load_skills([folder]), model)
        add_s = time.perf_counter() - t0
        router = Router(reg)
        before = evaluate(router, task.test, baseline=False, latency_sample=args.latency_sample)
        embedder.embed([r["query"] for r in task.fit])  # embedded once here, so the fit time below is the fit's own
        t0 = time.perf_counter()
        if args.tune_encoder:
            tuned = fit_tuned(router, task.fit, objective=args.objective,
                              settings=TuningSettings(epochs=args.tune_epochs))
            report, encoder = tuned.fit, {"kept": tuned.kept, "tuning_s": tuned.tuning.seconds, "steps": tuned.tuning.steps,
                                          "trials": {t.label: t.judged for t in tuned.trials}}
        else:
            report, encoder = fit(router, task.fit, objective=args.objective), None
        fit_s = time.perf_counter() - t0
        after = evaluate(router, task.test, latency_sample=args.latency_sample)
    embedder.flush()
    return {"dataset": name, "skills": len(task.skills), "held_out": len(task.held_out), "fit_n": len(task.fit),
            "fit_null": sum(r["skill"] is None for r in task.fit), "test_n": len(task.test),
            "test_null": sum(r["skill"] is None for r in task.test), "add_s": add_s, "fit_s": fit_s,
            "chosen": report.chosen, "oof": report.routers, "encoder": encoder,
            "unfitted": before, "fitted": after, "baseline": after["baseline"]}


def run_demo(args, model, embedder, tmp: Path) -> dict:
    """Text, state and hybrid routing on the demo model's skills, top-1 accuracy on their held-out
    tests: the 16 bundled skills (queries alone), then with their 16 alternates (same inputs, other
    answer formats) where each query comes with one example pair of the wanted format."""
    from skillsoup.demo import corpus
    from skillsoup.registry import SkillRegistry
    from skillsoup.routing import Router

    bundled = [s.name for s in corpus.SKILLS]
    alternates = sorted(p.stem for p in (REPO / "skills" / "demo-alternates").glob("*.yaml"))
    out = {}
    for setting, names, with_example in (("bundled, query alone", bundled, False),
                                         ("bundled + alternates, one example pair", bundled + alternates, True)):
        skills = [corpus.skill_object(n, n_demos=8, n_tests=args.demo_tests) for n in names]
        with SkillRegistry.open(tmp / "demo" / str(len(out)), embedder=embedder) as reg:
            reg.add(skills, model)
            router = Router(reg, model)
            row = {}
            for kind in ("text", "state", "hybrid"):
                hits = total = 0
                for skill in skills:
                    examples = [(skill.demonstrations[0].input, skill.demonstrations[0].output)] if with_example else None
                    for test in skill.tests:
                        matches = router.route(test.input, router=kind, examples=examples)
                        hits += bool(matches) and matches[0].name == skill.name
                        total += 1
                row[kind] = hits / total
            out[setting] = dict(row, skills=len(skills), queries=total)
    embedder.flush()
    return out


def balanced(m: dict) -> float:
    return (m["in_scope_accuracy"] + (m["abstain_recall"] if m["abstain_recall"] is not None else 0.0)) / 2


def print_table(results: list[dict], args) -> None:
    load = os.getloadavg()
    print(f"\nrouting on public intent data ({args.split} split), embedder all-MiniLM-L6-v2"
          f"{' tuned by fit --tune-encoder where it wins' if args.tune_encoder else ''}, {args.demos} demonstrations "
          f"per skill, fit set {args.fit_per_skill} queries per skill + {args.null_share:.0%} null, objective "
          f"{args.objective}; load average {load[0]:.1f} / {load[1]:.1f} on {os.cpu_count()} cores")
    print("| dataset | skills | router | in-scope acc | abstain recall | balanced | route p50 / p95 ms |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in results:
        for key, label in (("unfitted", "unfitted (max, 0.3)"), ("fitted", f"fitted ({r['fitted']['policy']})"),
                           ("baseline", "nn-threshold baseline")):
            m = r[key]
            lat = f"{m['p50_ms']:.1f} / {m['p95_ms']:.1f}" if m.get("p50_ms") is not None else "-"
            print(f"| {r['dataset']} | {r['skills']} | {label} | {m['in_scope_accuracy']:.3f} | "
                  f"{m['abstain_recall']:.3f} | {balanced(m):.3f} | {lat} |")
    print(f"\n| dataset | test queries (null) | fit queries (null) | fit s | add s | kept | out-of-fold {args.objective} "
          "objective: unfitted / baseline / classifier |")
    print("|---|---:|---:|---:|---:|---|---|")
    for r in results:  # accuracy@R: in-scope accuracy where abstain recall reaches R, "misses R" where not
        oof = " / ".join(f"{v:.3f}" if v >= 0 else "misses R"
                         for v in (r["oof"][k]["objective"] for k in ("unfitted", "baseline", "classifier")))
        print(f"| {r['dataset']} | {r['test_n']} ({r['test_null']}) | {r['fit_n']} ({r['fit_null']}) | {r['fit_s']:.1f} | "
              f"{r['add_s']:.0f} | {r['chosen']} | {oof} |")


def print_encoder_table(results: list[dict]) -> None:
    rows = [r for r in results if r.get("encoder")]
    if not rows:
        return
    print("\n| dataset | encoder kept | tuning steps | tuning s | judged out of fold (labelled queries): current / tuned |")
    print("|---|---|---:|---:|---|")
    for r in rows:
        e = r["encoder"]
        print(f"| {r['dataset']} | {e['kept']} | {e['steps']} | {e['tuning_s']:.0f} | "
              f"{e['trials']['current']:.3f} / {e['trials']['tuned']:.3f} |")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder with the cloned datasets (intent_data.py)")
    parser.add_argument("--datasets", default=",".join(intent_data.DATASETS))
    parser.add_argument("--split", choices=("test", "dev"), default="test")
    parser.add_argument("--demos", type=int, default=10)
    parser.add_argument("--fit-per-skill", type=int, default=20)
    parser.add_argument("--null-share", type=float, default=0.03)
    parser.add_argument("--held-out", type=int, default=10, help="intents with no skill (datasets without out-of-scope queries)")
    parser.add_argument("--objective", default="balanced")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-sample", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-cache", action="store_true", help="embed everything again")
    parser.add_argument("--demo-tests", type=int, default=10, help="held-out tests per demo skill (0: skip the demo part)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--tune-encoder", action="store_true",
                        help="fit with encoder tuning (skillsoup fit --tune-encoder): minutes per dataset")
    parser.add_argument("--tune-epochs", type=int, default=1, help="epochs of encoder tuning (fit's default: 1)")
    args = parser.parse_args(argv)

    import torch

    from skillsoup import load_model
    from skillsoup.embedding import get_embedder

    torch.set_num_threads(args.threads)
    inner = get_embedder(None)
    embedder = CachedEmbedder(inner, None if args.no_cache else args.data / f"embeddings-{inner.name}.npz")
    model = load_model(REPO / "skillsoup" / "demo_model")  # states are needed to add skills, not to route
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-routing-real-") as tmp:
        for name in [n for n in args.datasets.split(",") if n]:
            results.append(run_dataset(name, args, model, embedder, Path(tmp)))
            print(f"{name}: done ({results[-1]['fit_s']:.1f} s fit)", file=sys.stderr)
        demo = run_demo(args, model, embedder, Path(tmp)) if args.demo_tests else {}
    print_table(results, args)
    print_encoder_table(results)
    if demo:
        print("\n| demo model skills (top-1 right skill on held-out tests) | skills | queries | text | state | hybrid |")
        print("|---|---:|---:|---:|---:|---:|")
        for setting, row in demo.items():
            print(f"| {setting} | {row['skills']} | {row['queries']} | {row['text']:.3f} | {row['state']:.3f} | {row['hybrid']:.3f} |")
    results.append({"demo": demo})
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
