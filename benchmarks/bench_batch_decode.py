"""Batched decode on the CPU: one step over b rows that each carry their own state, the way the
serving engine decodes (skillsoup/serve/engine.py), at mamba-130m's and mamba2-130m's shapes (random
weights, fp32, one torch thread) and on the bundled demo model (``--archs demo,mamba,mamba2``). Three
steps, timed in turn within every repeat, best of --repeat:
  before     ``StateModel.step_`` module by module (norm, fused mixer step, residual add per layer:
             the CPU step before the whole-stack decode plan, skillsoup/models/cpu_decode.py)
  step       ``StateModel.step`` on the plan, the new state in a new buffer
  step_      ``StateModel.step_`` on the plan, the new state written over the batch's own

A batch of 32 rows holds 94 MB of state for mamba-130m and 626 MB for mamba2-130m (128 state
channels per head): allocating and copying that on every token costs as much as the model's matmuls.

    python benchmarks/bench_batch_decode.py [--batches 1,8,32] [--archs demo,mamba,mamba2] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_state  # noqa: E402  (its random-weight checkpoints at the 130m shapes)


def best_ms(fns, repeat: int, steps: int) -> list[float]:
    """Best milliseconds per step of each of ``fns`` (each runs n steps), timed in turn within every
    repeat so that a slow moment of the machine falls on both sides."""
    for fn in fns:
        fn(2)  # warm-up: first-touch pages, caches
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn(steps)
            best[i] = min(best[i], (time.perf_counter() - t0) / steps)
    return [b * 1e3 for b in best]


def load_bench_model(arch: str, args):
    if arch == "demo":
        from skillsoup import load_model
        from skillsoup.demo import DEMO_MODEL_DIR

        return load_model(DEMO_MODEL_DIR)
    return bench_state.build(arch, args)[0]


def measure(arch: str, batches: list[int], args) -> list[tuple]:
    from skillsoup.states.state import SkillState

    model = load_bench_model(arch, args)
    one = model.capture(list(range(3, 3 + args.prompt_tokens)))
    rows = []
    for b in batches:
        tokens = [7] * b

        def run(step, n):
            state = SkillState.cat([one] * b)  # the engine's batch: a copy the group owns
            for _ in range(n):
                _, state = step(tokens, state)

        steps = max(2, args.steps // max(1, b // 8)) * (50 if arch == "demo" else 1)
        before = lambda n: bench_state.module_by_module(model, lambda: run(model.step_, n))()  # noqa: E731
        timings = best_ms([before, lambda n: run(model.step, n), lambda n: run(model.step_, n)], args.repeat, steps)
        rows.append((arch, b, one.nbytes * b / 2**20, *timings))
    return rows


def main(argv=None) -> list[tuple]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--archs", default="mamba,mamba2")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--hidden", type=int, default=768)
    ap.add_argument("--vocab", type=int, default=0, help="0: the checkpoint's (50280 / 50288)")
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8, help="steps per timing at batch <= 8 (fewer for larger batches)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load_avg = os.getloadavg()[0]
    batches = [int(b) for b in args.batches.split(",")]
    rows = [r for arch in args.archs.split(",") for r in measure(arch.strip(), batches, args)]
    print(f"\nbatched decode step, {args.layers} layers, hidden {args.hidden} (demo: the bundled model), fp32, "
          f"1 torch thread; load average {load_avg:.2f} at the start, {os.getloadavg()[0]:.2f} at the end; best of "
          f"{args.repeat}")
    print("| arch | rows | batch state | before: step_ module by module | step (new buffers) | step_ (in place) | "
          "step_ vs before | step_ vs step | tokens/s (step_) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for arch, b, mib, before, new, inplace in rows:
        print(f"| {arch} | {b} | {mib:.2f} MiB | {before:.2f} ms | {new:.2f} ms | {inplace:.2f} ms | "
              f"{before / inplace:.2f}x | {new / inplace:.2f}x | {b / inplace * 1e3:.0f} |")
    if load_avg > 0.5 * (os.cpu_count() or 1):
        print(f"note: load average {load_avg:.1f}: other jobs share the cores; re-run on a quiet machine before "
              "quoting")
    return rows


if __name__ == "__main__":
    main()
