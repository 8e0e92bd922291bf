"""Benchmark the state engine against transformers on a mamba-130m-shaped random model (CPU).

Prints one table of ratios, every pair measured in this run:
  (a) time to first token: injected skill state + query  vs  demonstrations + query in the prompt
  (b) exact continuation of the query from a state: ours (parallel)  vs  transformers token by token
      (its only exact path for Mamba-1; its multi-token continuation restarts the scan from zero)
  (c) capture of the demonstrations  vs  transformers' forward over them
  (d) decode tokens/s: ours  vs  transformers' generate
Random weights: speed does not depend on the values. Usage:
    python benchmarks/bench_state.py [--demo-tokens 1024] [--query-tokens 32] [--layers 24] [--hidden 768]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def timed(fn, repeat: int) -> float:
    """Median wall time in seconds over ``repeat`` runs (after one warm-up run)."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build(args):
    import transformers
    from transformers import MambaConfig, MambaForCausalLM

    from skillsoup.models.base import StateModel
    from skillsoup.models.loading import model_fingerprint

    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = MambaConfig(hidden_size=args.hidden, num_hidden_layers=args.layers, state_size=16, conv_kernel=4,
                         expand=2, time_step_rank=max(1, args.hidden // 16), vocab_size=args.vocab)
    hf = MambaForCausalLM(config).eval()
    return StateModel(hf, None, fingerprint=model_fingerprint(hf), source="random"), hf


def main(argv=None) -> list[tuple[str, float, float, str]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-tokens", type=int, default=1024)
    parser.add_argument("--query-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=50280)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each fast measurement (median)")
    args = parser.parse_args(argv)

    from skillsoup.models.hf_cache import to_hf_cache

    model, hf = build(args)
    g = torch.Generator().manual_seed(1)
    demos = torch.randint(0, args.vocab, (1, args.demo_tokens), generator=g)
    query = torch.randint(0, args.vocab, (1, args.query_tokens), generator=g)
    prompt = torch.cat([demos, query], dim=1)
    state = model.capture(demos)
    slow = max(1, args.repeat // 3)  # transformers' long runs take tens of seconds

    def ttft_injected():
        logits, _ = model.forward(query, state, logits="last")
        return int(logits.argmax())

    def ttft_prompt_hf():
        with torch.no_grad():
            return int(hf(prompt, logits_to_keep=1).logits[0, -1].argmax())

    def ttft_prompt_ours():
        return int(model.forward(prompt, logits="last")[0].argmax())

    def continue_hf_token_by_token():
        cache = to_hf_cache(model, state)
        with torch.no_grad():
            for t in range(args.query_tokens):
                hf(query[:, t : t + 1], cache_params=cache, use_cache=True)

    def capture_hf():
        with torch.no_grad():
            hf(demos, use_cache=True, logits_to_keep=1)

    short = prompt[:, -args.query_tokens :]

    def decode_ours():
        list(model.generate_ids(short, max_new_tokens=args.new_tokens, stop_ids=()))

    def decode_hf():
        with torch.no_grad():
            hf.generate(short, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)

    t_inj = timed(ttft_injected, args.repeat)
    t_hf_prompt = timed(ttft_prompt_hf, slow)
    t_our_prompt = timed(ttft_prompt_ours, slow)
    t_hf_tbt = timed(continue_hf_token_by_token, args.repeat)
    t_cap = timed(lambda: model.capture(demos), slow)
    t_hf_cap = timed(capture_hf, slow)
    t_dec = timed(decode_ours, args.repeat)
    t_hf_dec = timed(decode_hf, args.repeat)

    # the same computation, checked once: injected state == demonstrations in the prompt
    with_state, _ = model.forward(query, state, logits="last")
    in_prompt, _ = model.forward(prompt, logits="last")
    rel_err = float((with_state - in_prompt).norm() / in_prompt.norm())

    n, q = args.demo_tokens, args.query_tokens
    rows = [
        (f"(a) TTFT: state + {q}-token query vs {n}+{q} in prompt (transformers)", t_inj, t_hf_prompt, ">=45x"),
        ("(a') same, prompt through our own forward", t_inj, t_our_prompt, ""),
        (f"(b) exact {q}-token continuation vs transformers token by token", t_inj, t_hf_tbt, ""),
        (f"(c) capture {n} tokens vs transformers forward", t_cap, t_hf_cap, ">=7x"),
        (f"(d) decode {args.new_tokens} tokens vs transformers generate", t_dec, t_hf_dec, ""),
    ]
    shape = f"{args.layers} layers, hidden {args.hidden}, vocab {args.vocab}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    print(f"\nbench_state: {shape}; injected vs in-prompt relative logit difference {rel_err:.1e}\n")
    print(f"| {'measurement':<70} | {'ours':>9} | {'baseline':>9} | {'speed-up':>8} | {'goal':>5} |")
    print(f"|{'-' * 72}|{'-' * 11}|{'-' * 11}|{'-' * 10}|{'-' * 7}|")
    for name, ours, base, goal in rows:
        print(f"| {name:<70} | {ours * 1e3:7.1f}ms | {base * 1e3:7.1f}ms | {base / ours:7.1f}x | {goal:>5} |")
    dec_rate, hf_rate = args.new_tokens / t_dec, args.new_tokens / t_hf_dec
    print(f"\ndecode: ours {dec_rate:.1f} tok/s, transformers {hf_rate:.1f} tok/s")
    return rows


if __name__ == "__main__":
    main()
