"""Router and runtime benchmark.

Part 1, route latency at scale: an embedded registry of N skills x D demonstrations whose
embeddings are random but clustered (each skill a random unit direction, its demonstrations that
direction plus noise), written straight through the index module (text routing needs no states, so
none are captured). Each query is real text embedded by the registry's embedder, so the latency
includes the query embedding, as a user sees it.

Policies timed: ``max``, ``max_skill_row`` and ``classifier`` (a skill classifier over all N skills,
as ``skillsoup fit`` stores it), each with the query encoder on ONNX Runtime (the default) and on
torch (the reference, ``SKILLSOUP_EMBED_IMPL=ref``), interleaved in one run.

Part 2, one answer end to end on a small model (a demo-sized random Mamba: hidden 256, 4 layers,
character vocabulary; or --model DIR), split into route, load/mix, prefill, first token and decode.

    nice python benchmarks/bench_router.py                     # 10,000 skills x 10 demonstrations
    python benchmarks/bench_router.py --skills 200 --embedder hash:384 --queries 20 --answers 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

QUERIES = [
    "set a timer for 5 minutes", "convert 10 miles to kilometers", "what is the weather in Paris",
    "reverse the word banana", "extract the email from: Ann <ann@x.org>", "is this review positive: loved it",
    "what is 17 plus 25", "reformat 2024-03-01 as March 1, 2024", "uppercase hello world", "make an acronym",
]


def build_index(path: Path, n_skills: int, n_demos: int, embedder: str, seed: int = 0) -> float:
    """Write the skill and demonstration rows; returns seconds."""
    import numpy as np

    from skillsoup.registry import SkillRegistry
    from skillsoup.skills.skill import Demonstration, Skill

    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    with SkillRegistry.open(path, embedder=embedder) as reg:
        dim = reg.embedder.dim
        with reg.lock:
            for start in range(0, n_skills, 100):
                skills, skill_vecs, demo_vecs = [], [], []
                for i in range(start, min(n_skills, start + 100)):
                    center = rng.standard_normal(dim)
                    center /= np.linalg.norm(center)
                    demos = center + 0.6 * rng.standard_normal((n_demos, dim)) / np.sqrt(dim)
                    demo_vecs.append(demos / np.linalg.norm(demos, axis=1, keepdims=True))
                    skill_vecs.append(center)
                    skills.append(Skill(f"skill-{i:05d}", f"benchmark skill {i}",
                                        tuple(Demonstration(f"input {j} of skill {i}", f"output {j}") for j in range(n_demos))))
                reg.index.put_demos_many(list(zip(skills, demo_vecs)))
                reg.index.put_skills([(s, v, {}, []) for s, v in zip(skills, skill_vecs)])
    return time.perf_counter() - t0


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def classifier_params(reg):
    """Router parameters with a skill classifier over every skill of the index: its means and its
    regression weights are the skill rows, its whitening the identity (the arithmetic of a fitted
    one; speed does not depend on the values), its accept model a fixed one."""
    import numpy as np

    from skillsoup.registry.index import SKILLS
    from skillsoup.routing.classifier import ACCEPT_FEATURES, SkillClassifier
    from skillsoup.routing.router import RouterParams

    hashes = {n: str(m.get("content_hash", ""))[:12] for n, m in reg.index.skill_metadata().items()}
    col = reg.index.collection(SKILLS, create=False)
    names, rows, offset = [], [], 0
    while True:
        res = col.get(include=["embeddings"], limit=1000, offset=offset)
        names += res["ids"]
        rows += [np.asarray(e, np.float32) for e in res["embeddings"]]
        offset += 1000
        if len(res["ids"]) < 1000:
            break
    dim = len(rows[0])
    accept = {"mean": [0.0] * len(ACCEPT_FEATURES), "scale": [1.0] * len(ACCEPT_FEATURES),
              "coef": [1.0, 1.0, -0.01, 1.0], "bias": 0.0}
    means = np.stack(rows) * 8.0
    model = SkillClassifier(tuple(names), tuple(hashes[n] for n in names), np.eye(dim, dtype=np.float32) * 8.0,
                            means, 5.0, 1.0, accept, np.ascontiguousarray(means.T), np.zeros(len(names), np.float32))
    return RouterParams(policy="classifier", classifier=model.save(reg.path), threshold=0.5,
                        fitted={"baseline": {"threshold": 0.5}})


def route_latency(path: Path, n_queries: int, policy: str, rows_max_age: float) -> dict[str, list[float]]:
    from skillsoup.registry import SkillRegistry
    from skillsoup.routing.router import Router, RouterParams

    with SkillRegistry.open(path) as reg:
        reg.rows_max_age = rows_max_age
        params = classifier_params(reg) if policy == "classifier" else RouterParams(policy=policy)
        router = Router(reg, params=params)
        router.route(QUERIES[0])  # loads the embedder (and the classifier)
        parts: dict[str, list[float]] = {"route": [], "embed": [], "retrieve": [], "decide": []}
        for i in range(n_queries):
            q = QUERIES[i % len(QUERIES)] + f" #{i}"
            t0 = time.perf_counter()
            router.route(q)
            t1 = time.perf_counter()
            emb = router.embed([q])[0]
            t2 = time.perf_counter()
            retrieval = router.retrieve(emb)
            t3 = time.perf_counter()
            router.decide(retrieval)
            t4 = time.perf_counter()
            for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
                parts[key].append(dt * 1000)
    return parts


def answer_parts(model_dir: str | None, n_answers: int, new_tokens: int, tmp: Path, embedder: str) -> dict[str, list[float]]:
    from skillsoup import load_model
    from skillsoup.registry import SkillRegistry
    from skillsoup.runtime import SkillSoup
    from skillsoup.skills.skill import Demonstration, Skill

    if model_dir is None:
        import importlib.util

        spec = importlib.util.spec_from_file_location("bench_registry", Path(__file__).with_name("bench_registry.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        model_dir = str(module.build_demo_model(tmp / "model"))
    model = load_model(model_dir)
    skills = [Skill(name, f"{name} words", tuple(Demonstration(f"{w} {i}", f"{w.upper()} {i}") for i in range(8)))
              for name, w in (("upper", "hello"), ("reverse", "banana"), ("count", "letters"), ("echo", "again"))]
    with SkillRegistry.open(tmp / "answer-reg", embedder=embedder) as reg:
        reg.add(skills, model)
        soup = SkillSoup(reg, model)
        soup.answer("hello 3", max_new_tokens=2)  # warm-up (and the state cache's first load)
        rows: dict[str, list[float]] = {k: [] for k in ("route_ms", "load_mix_ms", "prefill_ms", "first_token_ms",
                                                        "decode_tokens_per_s", "total_ms")}
        for i in range(n_answers):
            t = soup.answer(f"hello {i} banana", max_new_tokens=new_tokens, top_k=2).timings
            for k in rows:
                rows[k].append(getattr(t, k))
    return rows


def print_ratios(rows: list[tuple[str, float, float]], impls: list[str]) -> None:
    """Per policy: how much faster the first implementation's route and embedding are than the others'."""
    times = {name: (p50, p95) for name, p50, p95 in rows}
    print(f"\n| {'policy':14} | {'part':6} | " + " | ".join(f"{i} p50 / p95" for i in impls)
          + " | " + " | ".join(f"{i} / {impls[0]} (p50)" for i in impls[1:]) + " |")
    for policy in ("max", "max_skill_row", "classifier"):
        for part in ("route", "embed"):
            cells = [times[f"route[{policy}, {impl}] {part}"] for impl in impls]
            print(f"| {policy:14} | {part:6} | " + " | ".join(f"{a:.1f} / {b:.1f} ms" for a, b in cells) + " | "
                  + " | ".join(f"{c[0] / cells[0][0]:.2f}x" for c in cells[1:]) + " |")


def main(argv: list[str] | None = None) -> list[tuple[str, float, float]]:
    parser = argparse.ArgumentParser(description="route latency at scale and answer time split into parts")
    parser.add_argument("--skills", type=int, default=10_000)
    parser.add_argument("--demos", type=int, default=10)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--embedder", default="all-MiniLM-L6-v2", help="registry embedder (hash:DIM for a quick run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for one short query)")
    parser.add_argument("--rows-max-age", type=float, default=1.0,
                        help="seconds the registry may answer skill rows from memory: 1 as `skillsoup serve` (a "
                             "long-lived process), 0 reads them every time (a one-shot CLI call)")
    parser.add_argument("--impls", default="onnx,ref", help="query encoder implementations to time, in turn")
    parser.add_argument("--keep", type=Path, help="build the index here once and reuse it on later runs")
    parser.add_argument("--model", help="checkpoint for part 2 (default: a demo-sized random Mamba)")
    parser.add_argument("--answers", type=int, default=20, help="answers timed in part 2 (0: skip it)")
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench-router-"))
    impl_before = os.environ.get("SKILLSOUP_EMBED_IMPL")
    try:
        path = args.keep or tmp / "registry"
        built = 0.0
        if not (path / "chroma" / "chroma.sqlite3").is_file():
            built = build_index(path, args.skills, args.demos, args.embedder)
        rows: list[tuple[str, float, float]] = []
        impls = [impl.strip() for impl in args.impls.split(",") if impl.strip()]
        for policy in ("max", "max_skill_row", "classifier"):
            for impl in impls:
                os.environ["SKILLSOUP_EMBED_IMPL"] = impl
                parts = route_latency(path, args.queries, policy, args.rows_max_age)
                for key, values in parts.items():
                    rows.append((f"route[{policy}, {impl}] {key}", pct(values, 50), pct(values, 95)))
        os.environ["SKILLSOUP_EMBED_IMPL"] = impls[0]
        answer = answer_parts(args.model, args.answers, args.new_tokens, tmp, args.embedder) if args.answers else {}
        for key, values in answer.items():
            rows.append((f"answer {key}", statistics.median(values), pct(values, 95)))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        os.environ.pop("SKILLSOUP_EMBED_IMPL", None)
        if impl_before is not None:
            os.environ["SKILLSOUP_EMBED_IMPL"] = impl_before

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{args.skills:,} skills x {args.demos} demonstrations, embedder {args.embedder}, torch threads "
          f"{args.threads}, rows max age {args.rows_max_age:g} s, load average {load:.1f} on {os.cpu_count()} cores"
          + (f"; index written in {built:.0f} s" if built else "; index reused"))
    print(f"| {'what':36} | {'p50':>9} | {'p95':>9} |\n|{'-' * 38}|{'-' * 11}|{'-' * 11}|")
    for name, p50, p95 in rows:
        unit = "tok/s" if "tokens_per_s" in name else "ms"
        print(f"| {name:36} | {p50:6.1f} {unit:<2} | {p95:6.1f} {unit:<2} |".replace("tok/s ", "tok/s"))
    print("route = embed + retrieve + decide (+ overhead); answer parts from SkillSoup.answer timings "
          f"({args.new_tokens} new tokens, top 2 skills mixed)")
    if len(impls) > 1:
        print_ratios(rows, impls)
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"note: load average {load:.1f}: other jobs share the cores, so these times are inflated; "
              "re-run on a quiet machine for the latency goal (route p50 <= 15 ms, p95 <= 30 ms at 10,000 skills)")
    return rows


if __name__ == "__main__":
    main()
