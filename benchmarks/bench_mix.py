"""Mixing 8 skill states on this machine (CPU or CUDA): the flat layout against the per-layer mix it
replaced, and against copying the same bytes. One table of ratios from one run.

    python benchmarks/bench_mix.py                          # mamba-130m and mamba-2.8b shapes
    python benchmarks/bench_mix.py --shapes mamba-130m --reps 3 --threads 1

Rows per shape (random fp32 states of a Mamba-1 checkpoint's shape, 1 row each):
    flat     skillsoup.states.mixing.mix(8 states, out=a preallocated state): one weighted sum over the
             8 flat buffers (the Triton kernel on CUDA, 8 fused multiply-adds on CPU)
    layers   the mix before the flat layout: stack + tensordot per layer and kind (2 x layers ops)
    bank     mix_rows: one torch.mm over the 8 states held as rows of one [8, N] tensor
    copy     copying the 8 states' bytes once (what "one pass over memory" costs)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

SHAPES = {  # (layers, d_inner, d_state, conv width) of state-spaces' Mamba-1 checkpoints
    "mamba-130m": (24, 1536, 16, 4),
    "mamba-2.8b": (64, 5120, 16, 4),
}
TINY = {"tiny": (2, 32, 4, 4)}


def measure(fn, device, reps: int) -> float:
    fn()
    samples = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench(name: str, shape, device, reps: int) -> list[tuple]:
    from skillsoup.states.mixing import mix, mix_rows
    from skillsoup.states.state import SkillState

    layers, d, n, k = shape
    gen = torch.Generator().manual_seed(0)
    states = [SkillState([torch.randn(1, d, k, generator=gen) for _ in range(layers)],
                         [torch.randn(1, d, n, generator=gen) for _ in range(layers)], [1], "bench", "mamba").to(device)
              for _ in range(8)]
    weights = [1 / 8] * 8
    out = states[0].clone()
    bank = torch.stack([s.fixed for s in states])  # [8, N]
    flat_out = torch.empty_like(states[0].fixed)
    src = bank.reshape(-1)
    dst = torch.empty_like(src)
    w = torch.tensor(weights, device=device)

    def per_layer():
        return [torch.tensordot(w, torch.stack([s.ssm[i] for s in states]), dims=1) for i in range(layers)] + [
            torch.tensordot(w, torch.stack([s.conv[i] for s in states]), dims=1) for i in range(layers)]

    t_flat = measure(lambda: mix(states, weights, out=out), device, reps)
    t_layers = measure(per_layer, device, reps)
    t_bank = measure(lambda: mix_rows(bank, weights, out=flat_out), device, reps)
    t_copy = measure(lambda: dst.copy_(src), device, reps)
    mib = src.numel() * 4 / 2**20
    return [
        (f"{name}: 8 x {mib / 8:.1f} MiB", "flat mix into out", t_flat, t_flat / t_copy),
        ("", "per-layer mix (before)", t_layers, t_layers / t_copy),
        ("", "bank: one torch.mm", t_bank, t_bank / t_copy),
        ("", f"copy of the {mib:.0f} MiB", t_copy, 1.0),
    ]


def main(argv=None) -> list[tuple]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated subset of {', '.join(SHAPES)} (or tiny)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's); on a shared "
                   "machine 1 avoids threads spinning against other work")
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    catalog = {**SHAPES, **TINY}
    rows = []
    for name in args.shapes.split(","):
        rows += bench(name, catalog[name], device, args.reps)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.2f}")
    print(f"command: python benchmarks/bench_mix.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print("| states | method | ms | x copy |\n|---|---|---|---|")
    for states, method, seconds, ratio in rows:
        print(f"| {states} | {method} | {seconds * 1e3:.3f} | {ratio:.2f}x |")
    return rows


if __name__ == "__main__":
    main()
