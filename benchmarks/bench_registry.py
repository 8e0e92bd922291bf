"""Registry benchmark: add N skills x D short demonstrations with a demo-sized random Mamba model
(hidden 256, 4 layers, d_state 16, a ~100-token character vocabulary) and the default embedder.

Prints one table: where the time of ``SkillRegistry.add`` goes (capture, embedding, the rest =
Chroma and state files), measured in the same run, plus a no-op re-add, query latency and bytes on
disk per skill (Chroma vs state files).

    nice python benchmarks/bench_registry.py                 # 1,000 skills x 10 demonstrations
    python benchmarks/bench_registry.py --skills 100 --embedder hash:64 --threads 1
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

WORDS = ["cat", "river", "lamp", "stone", "cloud", "apple", "tiger", "glass", "paper", "music", "green", "quiet"]


def build_demo_model(folder: Path) -> Path:
    """A random model of the demo model's size with its character tokenizer."""
    import torch
    from transformers import MambaConfig, MambaForCausalLM

    from skillsoup.demo.tokenizer import BOS_ID, EOS_ID, PAD_ID, VOCAB, build_tokenizer

    torch.manual_seed(0)
    config = MambaConfig(hidden_size=256, num_hidden_layers=4, state_size=16, vocab_size=len(VOCAB),
                         pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID)
    MambaForCausalLM(config).save_pretrained(folder)
    build_tokenizer().save_pretrained(folder)
    return folder


def make_skills(n: int, d: int):
    from skillsoup.skills.skill import Demonstration, Skill

    out = []
    for i in range(n):
        w = [WORDS[(i + j * 7) % len(WORDS)] + str(j) for j in range(d)]
        demos = tuple(Demonstration(f"{x} {i}", f"{x.upper()}-{i % 97}") for x in w)
        out.append(Skill(f"skill-{i:04d}", f"benchmark skill number {i} about {WORDS[i % len(WORDS)]}", demos))
    return out


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--skills", type=int, default=1000)
    ap.add_argument("--demos", type=int, default=10)
    ap.add_argument("--embedder", default=None, help="default: all-MiniLM-L6-v2 (packaged)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--keep", type=Path, default=None, help="build the registry here and keep it")
    args = ap.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from skillsoup import load_model
    from skillsoup.registry import SkillRegistry, capture_skill
    from skillsoup.registry.index import skill_text

    tmp = Path(tempfile.mkdtemp(prefix="bench-registry-"))
    root = args.keep or tmp / "registry"
    try:
        model = load_model(build_demo_model(tmp / "model"))
        skills = make_skills(args.skills, args.demos)
        n_tokens = sum(len(model.encode(s.render_demonstrations())) + 1 for s in skills)
        reg = SkillRegistry.open(root, embedder=args.embedder)
        reg.embed_texts(["warm up"])  # load the embedding model outside the timings
        capture_skill(model, skills[0])

        t0 = time.perf_counter()
        reg.add(skills, model)
        t_add = time.perf_counter() - t0

        t0 = time.perf_counter()
        for s in skills:  # the capture part alone
            capture_skill(model, s)
        t_capture = time.perf_counter() - t0

        texts = [t for s in skills for t in [skill_text(s)] + [d.input for d in s.demonstrations]]
        t0 = time.perf_counter()
        for start in range(0, len(texts), 32 * (args.demos + 1)):  # add embeds in the same chunks
            reg.embed_texts(texts[start : start + 32 * (args.demos + 1)])
        t_embed = time.perf_counter() - t0

        t0 = time.perf_counter()
        results = reg.add(skills, model)
        t_noop = time.perf_counter() - t0
        assert all(r.status == "unchanged" for r in results)

        queries = [f"{WORDS[i % len(WORDS)]}{i % args.demos} {i}" for i in range(100)]
        vectors = reg.embed_texts(queries)
        t0 = time.perf_counter()
        for v in vectors:
            reg.query_demonstrations(v, 8)
        t_query = (time.perf_counter() - t0) / len(vectors)
        t0 = time.perf_counter()
        for v in vectors:
            reg.query_skills(v, 8)
        t_query_skills = (time.perf_counter() - t0) / len(vectors)
        reg.close()

        chroma, states = du(Path(root) / "chroma"), du(Path(root) / "states")
        n = args.skills
        rest = t_add - t_capture - t_embed
        print(f"registry benchmark: {n} skills x {args.demos} demonstrations, {n_tokens / n:.0f} tokens per skill, "
              f"model hidden 256 x 4 layers, embedder {reg.embedder.name}, torch threads {torch.get_num_threads()}")
        print(f"{'what':44} {'seconds':>9} {'per skill':>11} {'share':>7}")
        rows = [
            ("add (all of it)", t_add, 1.0),
            ("  capture states (model)", t_capture, t_capture / t_add),
            ("  embed texts", t_embed, t_embed / t_add),
            ("  the rest: Chroma rows, state files, fsync", rest, rest / t_add),
            ("re-add, all unchanged (no-op)", t_noop, t_noop / t_add),
        ]
        for name, sec, share in rows:
            print(f"{name:44} {sec:9.2f} {sec / n * 1e3:9.2f} ms {share:7.1%}")
        print(f"skills per second (add): {n / t_add:.1f}")
        print(f"query_demonstrations(n=8): {t_query * 1e3:.2f} ms; query_skills(n=8): {t_query_skills * 1e3:.2f} ms")
        print(f"disk per skill: chroma {chroma / n / 1024:.1f} KiB + states {states / n / 1024:.1f} KiB = "
              f"{(chroma + states) / n / 1024:.1f} KiB (totals {chroma / 2**20:.1f} MiB + {states / 2**20:.1f} MiB)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
