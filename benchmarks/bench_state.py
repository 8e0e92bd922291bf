"""Benchmark the CPU state engine against transformers and against its floor (random weights).

For each architecture (Mamba-1 at mamba-130m's shape, Mamba-2 at mamba2-130m's) and each torch thread
count, one table row per measurement, every number measured in this run, best of --repeat runs:
  (a)  time to first token: injected skill state + query  vs  demonstrations + query in transformers' prompt
  (a') the same, the prompt through our own forward
  (b)  exact continuation of the query from a state vs transformers' exact path (Mamba-1: token by
       token, its multi-token continuation restarts the scan from zero; Mamba-2: one call from the cache)
  (c)  capture of the demonstrations vs transformers' forward over them
  (d)  decode: prompt + new tokens, ours vs transformers' generate
  (d') the same with the module-by-module CPU step (before the whole-stack decode plan, cpu_decode.py)
The floor beside each row is the time of the model's projections alone over the row's tokens (the
mixers' in/x/dt/out projections, Mamba-2's in/out, plus the LM head for each token whose logits the
row needs), measured in the same run: what no scan or glue can beat on this machine.

Timings mean nothing on a busy machine: the script refuses to run when the 1-minute load average is
above --max-load (default 0.5), unless --force, which prints the warning in the table. On a shared
machine, ``--threads 1 --clock process`` times the process's CPU time instead of the wall clock:
other jobs taking turns on the cores do not inflate it (sharing the caches still does). Usage:
    python benchmarks/bench_state.py [--archs mamba,mamba2] [--threads 1,2] [--repeat 3] [--rows aAbcdD] [--force]
"""

from __future__ import annotations

import argparse
import os
import time
import types
from dataclasses import dataclass

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class Row:
    arch: str
    threads: int
    name: str
    ours: float  # seconds
    floor: float | None  # seconds of projections alone, None where it does not apply
    base: float  # seconds of the baseline
    goal: str


CLOCK = time.perf_counter  # or time.process_time (--clock process)


def timed(fn, repeat: int) -> float:
    """Best time in seconds over ``repeat`` runs, after one warm-up run."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = CLOCK()
        fn()
        best = min(best, CLOCK() - t0)
    return best


def build(arch: str, args):
    import transformers
    from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

    from skillsoup.models.base import StateModel
    from skillsoup.models.loading import model_fingerprint

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    h = args.hidden
    if arch == "mamba":
        config = MambaConfig(hidden_size=h, num_hidden_layers=args.layers, state_size=16, conv_kernel=4, expand=2,
                             time_step_rank=max(1, h // 16), vocab_size=args.vocab or 50280)
        hf = MambaForCausalLM(config).eval()
    else:
        head_dim = min(64, 2 * h)
        config = Mamba2Config(hidden_size=h, num_hidden_layers=args.layers, state_size=128 if h >= 256 else 16,
                              conv_kernel=4, expand=2, head_dim=head_dim, num_heads=2 * h // head_dim, n_groups=1,
                              vocab_size=args.vocab or 50288)
        hf = Mamba2ForCausalLM(config).eval()
    return StateModel(hf, None, fingerprint=model_fingerprint(hf), source="random"), hf


def projections(hf, tokens: int):
    """A callable running only the model's mixer projections over ``tokens`` tokens."""
    layers = [layer.mixer for layer in hf.backbone.layers]
    m = layers[0]
    d = m.intermediate_size
    x, inner = torch.randn(1, tokens, m.hidden_size), torch.randn(1, tokens, d)
    low_rank = torch.randn(1, tokens, m.time_step_rank) if hasattr(m, "x_proj") else None

    def run():
        with torch.no_grad():
            for mixer in layers:
                mixer.in_proj(x)
                if low_rank is not None:  # Mamba-1: x_proj, and dt_proj's matmul (its bias is the scan's)
                    mixer.x_proj(inner)
                    low_rank @ mixer.dt_proj.weight.t()
                mixer.out_proj(inner)

    return run


def lm_head(hf):
    x = torch.randn(1, hf.config.hidden_size)

    def run():
        with torch.no_grad():
            hf.lm_head(x)

    return run


def module_by_module(model, fn):
    """``fn`` run with the model's ops stripped of the whole-stack decode plan (cpu_decode.py): the
    step goes layer by layer through the PyTorch modules, as before the plan existed."""
    def run():
        ops = model._ops
        model._ops = types.SimpleNamespace(**{k: v for k, v in vars(ops).items() if k != "decode_plan"})
        try:
            fn()
        finally:
            model._ops = ops

    return run


def measure(arch: str, threads: int, args) -> list[Row]:
    from skillsoup.models.hf_cache import to_hf_cache

    torch.set_num_threads(threads)
    model, hf = build(arch, args)
    vocab = hf.config.vocab_size
    g = torch.Generator().manual_seed(1)
    demos = torch.randint(0, vocab, (1, args.demo_tokens), generator=g)
    query = torch.randint(0, vocab, (1, args.query_tokens), generator=g)
    prompt = torch.cat([demos, query], dim=1)
    state = model.capture(demos)
    n, q, new, rep = args.demo_tokens, args.query_tokens, args.new_tokens, args.repeat

    def injected():
        model.forward(query, state, logits="last")

    def hf_prompt():
        with torch.no_grad():
            hf(prompt, logits_to_keep=1)

    def hf_continue():
        cache = to_hf_cache(model, state)
        with torch.no_grad():
            if arch == "mamba":  # its only exact path from a cache
                for t in range(q):
                    hf(query[:, t : t + 1], cache_params=cache, use_cache=True, logits_to_keep=1)
            else:
                hf(query, cache_params=cache, use_cache=True, logits_to_keep=1)

    def hf_capture():
        with torch.no_grad():
            hf(demos, use_cache=True, logits_to_keep=1)

    def decode():
        list(model.generate_ids(query, max_new_tokens=new, stop_ids=()))

    def hf_decode():
        with torch.no_grad():
            hf.generate(query, max_new_tokens=new, min_new_tokens=new, do_sample=False)

    head = timed(lm_head(hf), rep * 3)
    floor_q, floor_n = timed(projections(hf, q), rep) + head, timed(projections(hf, n), rep)
    floor_decode = floor_q + (new - 1) * (timed(projections(hf, 1), rep * 3) + head)
    t_inj = timed(injected, rep) if set(args.rows) & set("ab") else 0.0
    wanted = {  # row letter -> (name, ours, floor, baseline, goal), each measured only when asked for
        "a": lambda: (f"(a) TTFT: state + {q}-token query vs {n}+{q} in transformers' prompt", t_inj, floor_q,
                      timed(hf_prompt, rep), ">=45x"),
        "A": lambda: ("(a') same, the prompt through our own forward", t_inj, floor_q,
                      timed(lambda: model.forward(prompt, logits="last"), rep), ""),
        "b": lambda: (f"(b) exact {q}-token continuation vs transformers' exact path", t_inj, floor_q,
                      timed(hf_continue, rep), ""),
        "c": lambda: (f"(c) capture {n} tokens vs transformers' forward", timed(lambda: model.capture(demos), rep),
                      floor_n, timed(hf_capture, rep), "<=2x floor, >=2.5x"),
        "d": lambda: (f"(d) decode {new} tokens after a {q}-token prompt vs generate", timed(decode, rep),
                      floor_decode, t_hf_decode, ">=1.5x"),
        "D": lambda: ("(d') same, stepping module by module (the CPU step before the decode plan)",
                      timed(module_by_module(model, decode), rep), floor_decode, t_hf_decode, ""),
    }
    t_hf_decode = timed(hf_decode, rep) if set(args.rows) & set("dD") else 0.0
    rows = [Row(arch, threads, *wanted[key]()) for key in "aAbcdD" if key in args.rows]
    with_state, _ = model.forward(query, state, logits="last")  # the same computation, checked once
    in_prompt, _ = model.forward(prompt, logits="last")
    rel_err = float((with_state - in_prompt).norm() / in_prompt.norm())
    print(f"{arch}, {threads} thread(s): impl={model.impl_name}, injected vs in-prompt relative logit "
          f"difference {rel_err:.1e}", flush=True)
    return rows


def print_table(rows: list[Row], warning: str) -> None:
    print("\n| arch | threads | measurement | ours | floor | ours/floor | baseline | speed-up | goal |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---|")
    for r in rows:
        floor = f"{r.floor * 1e3:.1f} ms" if r.floor else "-"
        per_floor = f"{r.ours / r.floor:.2f}x" if r.floor else "-"
        print(f"| {r.arch} | {r.threads} | {r.name} | {r.ours * 1e3:.1f} ms | {floor} | {per_floor} | "
              f"{r.base * 1e3:.1f} ms | {r.base / r.ours:.1f}x | {r.goal} |")
    if warning:
        print(f"\n**{warning}**")


def main(argv=None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default="mamba,mamba2", help="comma-separated: mamba, mamba2")
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts to run under")
    parser.add_argument("--demo-tokens", type=int, default=1024)
    parser.add_argument("--query-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=0, help="0: the checkpoint's (50280 / 50288)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement (the best counts)")
    parser.add_argument("--rows", default="aAbcd",
                        help="rows to measure: a, A (a'), b, c, d, D (d'; not by default) (e.g. --rows dD)")
    parser.add_argument("--max-load", type=float, default=0.5, help="refuse above this 1-minute load average")
    parser.add_argument("--force", action="store_true", help="run on a busy machine; the table says so")
    parser.add_argument("--clock", choices=["wall", "process"], default="wall",
                        help="process: CPU time of this process (with --threads 1 only)")
    args = parser.parse_args(argv)
    global CLOCK
    CLOCK = time.process_time if args.clock == "process" else time.perf_counter
    if args.clock == "process" and args.threads != "1":
        parser.error("--clock process adds up the CPU time of all threads: use it with --threads 1")

    load = os.getloadavg()[0]
    warning = ""
    if load > args.max_load:
        message = (f"the machine is busy (1-minute load average {load:.2f} > {args.max_load}): timings would be "
                   f"inflated, and unevenly between the two sides")
        if not args.force:
            raise SystemExit(f"bench_state: {message}; re-run on a quiet machine, or pass --force to print anyway")
        warning = f"WARNING: {message}; re-measure on a quiet machine"
    rows = []
    for arch in args.archs.split(","):
        for threads in (int(t) for t in args.threads.split(",")):
            rows += measure(arch.strip(), threads, args)
    shape = f"{args.layers} layers, hidden {args.hidden}, torch {torch.__version__}, {os.cpu_count()} CPUs"
    print(f"\nbench_state: {shape}; load average {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end "
          f"(this run included); best of {args.repeat}, {args.clock} clock")
    print_table(rows, warning)
    return rows


if __name__ == "__main__":
    main()
