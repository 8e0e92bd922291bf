"""GPU benchmark of the Triton kernels and fast paths (issue 6): one table of ratios from one run.

    python benchmarks/bench_gpu.py                                 # on a CUDA machine (H100 / H200)
    python benchmarks/bench_gpu.py --shapes mamba-130m,mamba-1.4b  # a subset, to stay under a time limit
    TRITON_INTERPRET=1 python benchmarks/bench_gpu.py --dry-run    # tiny shapes on CPU: checks the script

Rows (random weights: speed does not depend on the values; mamba-130m / 1.4b / 2.8b shapes):
  mix      8 states of mamba-2.8b shape mixed over their flat buffers (skillsoup.states.mixing.mix: one
           Triton launch on CUDA) into a preallocated state, vs a device-to-device copy of the 8
           states' bytes (goal <= 1.3x), and the per-layer PyTorch mix for reference
  prefill  a 512-token query from an injected state vs the same tokens from the zero state (goal <= 1.1x)
  ttft     time to first token: injected skill + 32-token query vs 2,048 demonstration tokens + the
           query in the prompt (both on skillsoup's fast path)
  decode   tokens/s of StateModel.generate_ids vs transformers' generate, per token after the prompt
  equal    end to end on CUDA: forward(query, capture(demos)) with the kernels vs forward(demos + query)
           with the reference ops, relative L2 error of the query logits (float32 models, TF32 off)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

MAMBA1 = dict(state_size=16, conv_kernel=4, expand=2, vocab_size=50280)
SHAPES = {  # the state-spaces checkpoints' shapes (Mamba-1)
    "mamba-130m": dict(MAMBA1, hidden_size=768, num_hidden_layers=24, time_step_rank=48),
    "mamba-1.4b": dict(MAMBA1, hidden_size=2048, num_hidden_layers=48, time_step_rank=128),
    "mamba-2.8b": dict(MAMBA1, hidden_size=2560, num_hidden_layers=64, time_step_rank=160),
}
MAMBA2_CHECK = dict(hidden_size=768, num_hidden_layers=24, state_size=128, head_dim=64, num_heads=24, n_groups=1,
                    expand=2, conv_kernel=4, vocab_size=50288)  # mamba2-130m's shape, for the equivalence row
TINY = {"tiny": dict(hidden_size=16, num_hidden_layers=2, state_size=4, conv_kernel=4, expand=2, time_step_rank=2,
                     vocab_size=64)}
TINY_MAMBA2 = dict(hidden_size=16, num_hidden_layers=2, state_size=4, head_dim=8, num_heads=4, n_groups=1, expand=2,
                   conv_kernel=4, vocab_size=64)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU through TRITON_INTERPRET=1")
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated subset of {', '.join(SHAPES)}")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"], help="model weights")
    p.add_argument("--query-tokens", type=int, default=512)
    p.add_argument("--demo-tokens", type=int, default=2048)
    p.add_argument("--ttft-query-tokens", type=int, default=32)
    p.add_argument("--decode-tokens", type=int, default=32)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args(argv)
    if args.decode_tokens < 2:
        p.error("--decode-tokens must be at least 2 (decode speed is the time of N tokens minus 1, over N - 1)")
    if args.dry_run:
        args.shapes, args.query_tokens, args.demo_tokens = "tiny", 16, 24
        args.ttft_query_tokens, args.decode_tokens, args.reps = 4, 3, 1
    return args


# ---- timing --------------------------------------------------------------------------------------
def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(fn, device, reps: int, inner: int = 1, warmup: int = 1) -> float:
    """Median seconds per call of ``fn`` over ``reps`` timings of ``inner`` back-to-back calls."""
    for _ in range(warmup):
        fn()
    sync(device)
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        sync(device)
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms"


# ---- models --------------------------------------------------------------------------------------
def build_model(arch: str, config: dict, device, dtype, kernels: bool, name: str):
    """A random MambaForCausalLM / Mamba2ForCausalLM wrapped in a StateModel. ``kernels`` picks
    skillsoup_kernels.model_ops (impl="triton" on CUDA; swapped in by hand on CPU, where dispatch
    refuses it) or the reference ops."""
    from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    config_cls, model_cls = (MambaConfig, MambaForCausalLM) if arch == "mamba" else (Mamba2Config, Mamba2ForCausalLM)
    with torch.device(device):  # initialise on the device: a 2.8b model on CPU takes minutes
        hf = model_cls(config_cls(**config))
    hf = hf.to(dtype).eval()
    return wrap(hf, name, kernels)


def wrap(hf, name: str, kernels: bool):
    import skillsoup_kernels

    from skillsoup.models.base import StateModel

    on_cuda = hf.lm_head.weight.device.type == "cuda"
    model = StateModel(hf, fingerprint=f"bench-{name}", source=name, impl="triton" if kernels and on_cuda else "ref")
    if kernels and not on_cuda:  # --dry-run: the interpreted kernels on CPU
        model._ops, model.impl_name = skillsoup_kernels.model_ops, "triton"  # reaches the backend
    return model


# ---- rows ----------------------------------------------------------------------------------------
def bench_mix(name: str, config: dict, device, args) -> list[tuple]:
    from skillsoup.states.mixing import mix
    from skillsoup.states.state import SkillState

    d, n = config["expand"] * config["hidden_size"], config["state_size"]  # d_inner, d_state
    k, layers = config["conv_kernel"], config["num_hidden_layers"]
    states = [
        SkillState(conv=[torch.randn(1, d, k, device=device) for _ in range(layers)],
                   ssm=[torch.randn(1, d, n, device=device) for _ in range(layers)],
                   n_tokens=[1], fingerprint="bench", arch="mamba")
        for _ in range(8)
    ]
    weights = [1 / 8] * 8
    src = torch.empty(sum(s.nbytes for s in states) // 4, dtype=torch.float32, device=device)  # the 8 states' bytes
    dst = torch.empty_like(src)
    out = states[0].clone()
    inner = 1 if args.dry_run else 20
    t_copy = measure(lambda: dst.copy_(src), device, args.reps, inner)
    t_flat = measure(lambda: mix(states, weights, out=out), device, args.reps, inner)  # one kernel / one mm
    w = torch.tensor(weights, device=device)

    def per_layer():  # the mix before the flat layout: stack + tensordot per layer and kind
        return [torch.tensordot(w, torch.stack([s.ssm[i] for s in states]), dims=1) for i in range(layers)] + [
            torch.tensordot(w, torch.stack([s.conv[i] for s in states]), dims=1) for i in range(layers)
        ]

    t_layers = measure(per_layer, device, args.reps, inner)
    mib = src.numel() * 4 / 2**20
    return [
        (f"mix 8 flat states into a preallocated one vs device copy of their {mib:.1f} MiB", f"8 x {name}",
         ms(t_flat), ms(t_copy), f"{t_flat / t_copy:.2f}x", "<= 1.3x"),
        ("mix 8 states: PyTorch per layer vs flat", f"8 x {name}", ms(t_layers), ms(t_flat),
         f"{t_layers / t_flat:.2f}x faster", ""),
    ]


def bench_model(name: str, config: dict, device, dtype, args) -> list[tuple]:
    model = build_model("mamba", config, device, dtype, kernels=True, name=name)
    vocab = config["vocab_size"]
    gen = torch.Generator(device="cpu").manual_seed(1)
    demos = torch.randint(3, vocab, (1, args.demo_tokens), generator=gen).to(device)
    query = torch.randint(3, vocab, (1, args.query_tokens), generator=gen).to(device)
    state = model.capture(demos)  # the injected skill: a real capture of 2,048 demonstration tokens
    rows = []

    t_inj = measure(lambda: model.forward(query, state, logits="last"), device, args.reps)
    t_zero = measure(lambda: model.forward(query, None, logits="last"), device, args.reps)
    rows.append((f"prefill {args.query_tokens} tokens: injected vs zero state", name, ms(t_inj), ms(t_zero),
                 f"{t_inj / t_zero:.2f}x", "<= 1.1x"))

    short = query[:, : args.ttft_query_tokens]
    prompt = torch.cat([demos, short], dim=1)

    def first_token(ids, start):
        return int(model.forward(ids, start, logits="last")[0].argmax(-1))

    t_skill = measure(lambda: first_token(short, state), device, args.reps)
    t_prompt = measure(lambda: first_token(prompt, None), device, args.reps)
    rows.append((f"TTFT: skill + {short.shape[1]}-token query vs {args.demo_tokens} demo tokens in prompt", name,
                 ms(t_skill), ms(t_prompt), f"{t_prompt / t_skill:.1f}x faster", ""))

    n_new = args.decode_tokens
    head = query[:, :8]

    def ours(k):
        return list(model.generate_ids(head, state, max_new_tokens=k, stop_ids=()))

    def theirs(k):
        return model.hf.generate(head, attention_mask=torch.ones_like(head), max_new_tokens=k, min_new_tokens=k,
                                 do_sample=False, pad_token_id=0)

    def per_token(generate):  # the prompt's forward cancels out
        return (measure(lambda: generate(n_new), device, args.reps) - measure(lambda: generate(1), device, args.reps)) / (
            n_new - 1
        )

    per_ours, per_hf = per_token(ours), per_token(theirs)
    rows.append((f"decode tok/s (per token after an 8-token prompt, {n_new} new)", name,
                 f"{1 / per_ours:.1f} tok/s", f"{1 / per_hf:.1f} tok/s (transformers)",
                 f"{per_hf / per_ours:.2f}x faster", ""))
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def check_equal(arch: str, name: str, config: dict, device, args) -> tuple:
    """Kernels from an injected state vs the reference ops reading demos + query in one pass (float32)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        fast = build_model(arch, config, device, torch.float32, kernels=True, name=name)
        ref = wrap(fast.hf, name, kernels=False)
        gen = torch.Generator(device="cpu").manual_seed(2)
        demos = torch.randint(3, config["vocab_size"], (2, 8 if args.dry_run else 64), generator=gen).to(device)
        query = torch.randint(3, config["vocab_size"], (2, 4 if args.dry_run else 32), generator=gen).to(device)
        logits, _ = fast.forward(query, fast.capture(demos))
        full, _ = ref.forward(torch.cat([demos, query], dim=1))
        expected = full[:, demos.shape[1]:]
        err = float((logits.double() - expected.double()).norm() / expected.double().norm())
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    # mamba-ssm's chunked scan multiplies with tl.dot, which runs float32 as TF32 on CUDA
    import skillsoup_kernels

    tf32 = arch == "mamba2" and device.type == "cuda" and skillsoup_kernels.mamba_chunk_scan() is not None
    limit = 2e-3 if tf32 else 1e-4
    verdict = "PASS" if err <= limit else "FAIL"
    return (f"equal: kernels from injected state vs ref ops on demos+query ({fast.impl_name} vs ref)", name,
            f"rel err {err:.2e}", f"limit {limit:.0e}", verdict, "PASS")


# ---- main ----------------------------------------------------------------------------------------
def main(argv=None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before skillsoup_kernels is imported
        device = torch.device("cpu")
    else:
        if not torch.cuda.is_available():
            sys.exit("bench_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False); "
                     "run `TRITON_INTERPRET=1 python benchmarks/bench_gpu.py --dry-run` to check it on CPU")
        device = torch.device("cuda")
    try:
        import skillsoup_kernels
        import triton
    except ImportError as exc:
        sys.exit(f"bench_gpu.py needs the Triton kernels: {exc}")
    if args.dry_run and os.environ.get("TRITON_INTERPRET") != "1":
        sys.exit("--dry-run runs the kernels on CPU, which needs TRITON_INTERPRET=1")
    catalog = TINY if args.dry_run else SHAPES
    names = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in names if s not in catalog]
    if unknown:
        sys.exit(f"unknown shapes {unknown}; choose from {', '.join(catalog)}")
    dtype = getattr(torch, args.dtype)

    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else "CPU, Triton interpreter (dry run: checks the script, the numbers mean nothing)")
    mamba_ssm = "yes" if skillsoup_kernels.mamba_chunk_scan() is not None else "no (ops.ssd_scan)"
    print(f"device: {where}; torch {torch.__version__}, triton {triton.__version__}; model dtype {args.dtype}; "
          f"mamba-ssm for Mamba-2 prefill: {mamba_ssm}")
    print(f"command: python benchmarks/bench_gpu.py {' '.join(sys.argv[1:] if argv is None else argv)}\n")

    mix_shape = "tiny" if args.dry_run else "mamba-2.8b"
    rows = bench_mix(mix_shape, catalog[mix_shape], device, args)
    for name in names:
        rows += bench_model(name, catalog[name], device, dtype, args)
    first = names[0]
    rows.append(check_equal("mamba", first, catalog[first], device, args))
    m2_name, m2_config = ("tiny-mamba2", TINY_MAMBA2) if args.dry_run else ("mamba2-130m", MAMBA2_CHECK)
    rows.append(check_equal("mamba2", m2_name, m2_config, device, args))

    header = ("measurement", "shape", "ours", "baseline", "ratio", "goal")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    failed = [r for r in rows if r[4] == "FAIL"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
