"""GPU benchmark of the runtime (issues 6 and 14): one table of ratios from one run, each row with its goal.

    python benchmarks/bench_gpu.py                                 # on a CUDA machine (H100 / H200)
    python benchmarks/bench_gpu.py --shapes mamba-130m,mamba-1.4b  # a subset, to stay under a time limit
    TRITON_INTERPRET=1 python benchmarks/bench_gpu.py --dry-run    # tiny shapes on CPU: checks the script

Rows (random weights: speed does not depend on the values; mamba-130m / 1.4b / 2.8b shapes; CUDA
graphs on, as ``generate`` and ``forward`` use them on the kernels, unless a row says eager):
  mix       8 states of mamba-2.8b shape mixed over their flat buffers into a preallocated state (one
            Triton launch) vs a device-to-device copy of the same bytes (goal <= 1.3x)
  prefill   a 512-token query from an injected state vs the same tokens from the zero state (<= 1.1x)
  ttft      injected skill + 32-token query vs 2,048 demonstration tokens + the query in the prompt
  decode    batch 1 through generate (graph vs eager), batch 8 / 32 rows with different states
  capture   2,048 tokens through the length-bucket graph vs eager; a sweep of the scan's tile length
  launches  GPU ops and host launches per decoded token (torch.profiler): eager step vs graph replay
  answer    end to end from banked states: load + mix 2 skills, prefill, first token, decode
  equal     float32 paths against a float64 twin (skillsoup.models.precision): the kernels from an
            injected state vs the reference ops on demos + query (goal: <= 2x the reference, <= 1e-4)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_gpu_runtime as runtime  # noqa: E402
from bench_gpu_runtime import measure, ms, sync  # noqa: E402

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
    p.add_argument("--batches", default="8,32", help="decode batch sizes (rows with different states)")
    p.add_argument("--sweep-tiles", default="8,16,32,64", help="Mamba-1 scan tile lengths tried on the first shape "
                   "('' to skip)")
    p.add_argument("--skip-equal", action="store_true", help="leave out the float64 exactness rows")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--markdown", help="also write the table to this file")
    args = p.parse_args(argv)
    if args.decode_tokens < 2:
        p.error("--decode-tokens must be at least 2 (decode speed is the time of N tokens minus 1, over N - 1)")
    if args.dry_run:
        args.shapes, args.query_tokens, args.demo_tokens = "tiny", 8, 16
        args.ttft_query_tokens, args.decode_tokens, args.reps, args.batches = 4, 3, 1, "2"
        args.sweep_tiles = "8" if args.sweep_tiles else ""
    args.batches = [int(b) for b in args.batches.split(",") if b.strip()]
    args.sweep_tiles = [int(t) for t in args.sweep_tiles.split(",") if t.strip()]
    return args


# ---- models --------------------------------------------------------------------------------------
def build_model(arch: str, config: dict, device, dtype, kernels: bool, name: str):
    """A random MambaForCausalLM / Mamba2ForCausalLM wrapped in a StateModel. ``kernels`` picks
    skillsoup_kernels.model_ops (impl="triton" on CUDA; swapped in by hand on CPU, where dispatch
    refuses it, with the graphs' static buffers on) or the reference ops."""
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
    if kernels and not on_cuda:  # --dry-run: the interpreted kernels on CPU, static buffers without graphs
        model._ops, model.impl_name = skillsoup_kernels.model_ops, "triton"  # reaches the backend
        model.use_graphs = True
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
    t_flat = measure(lambda: mix(states, weights, out=out), device, args.reps, inner)  # one kernel
    mib = src.numel() * 4 / 2**20
    return [(f"mix 8 flat states into a preallocated one vs device copy of their {mib:.1f} MiB", f"8 x {name}",
             ms(t_flat), ms(t_copy), f"{t_flat / t_copy:.2f}x", "<= 1.3x")]


def bench_model(name: str, config: dict, device, dtype, args, first: bool) -> list[tuple]:
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
    with runtime.graphs_off(model):
        t_skill_eager = measure(lambda: first_token(short, state), device, args.reps)
    ttft_goal = runtime.goal(name, "ttft_ms", "<= {} ms")
    rows.append((f"TTFT: skill + {short.shape[1]}-token query vs {args.demo_tokens} demo tokens in prompt", name,
                 ms(t_skill), ms(t_prompt), f"{t_prompt / t_skill:.1f}x faster",
                 ttft_goal + (", >= 8x" if name == "mamba-1.4b" else "")))
    rows.append((f"TTFT: skill + {short.shape[1]}-token query, length-bucket graph vs eager", name, ms(t_skill),
                 f"{ms(t_skill_eager)} eager", f"{t_skill_eager / t_skill:.1f}x", ttft_goal))

    rows += runtime.decode_rows(name, model, demos, args, device)
    rows += runtime.capture_rows(name, model, demos, args, device)
    rows += runtime.launch_rows(name, model, state, device)
    rows += runtime.answer_rows(name, model, demos, args, device)
    rows.append(transformers_decode(name, model, query, args, device))
    if first and args.sweep_tiles:
        rows += runtime.tile_rows(name, model, demos, args, device)
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def transformers_decode(name, model, query, args, device) -> tuple:
    """transformers' own generate on the same weights, for scale."""
    head, n_new = query[:, :8], args.decode_tokens

    def theirs(k):
        return model.hf.generate(head, attention_mask=torch.ones_like(head), max_new_tokens=k, min_new_tokens=k,
                                 do_sample=False, pad_token_id=0)

    per = (measure(lambda: theirs(n_new), device, args.reps) - measure(lambda: theirs(1), device, args.reps)) / (n_new - 1)
    return ("decode tok/s, batch 1: transformers' generate (for scale)", name, f"{1 / per:.0f} tok/s", "", "", "")


def check_equal(arch: str, name: str, config: dict, device, args) -> tuple:
    """Each float32 path against a float64 twin (TF32 off): kernels from an injected state vs the
    reference ops on demos + query."""
    from skillsoup.models import precision

    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        fast = build_model(arch, config, device, torch.float32, kernels=True, name=name)
        ref = wrap(fast.hf, name, kernels=False)
        gen = torch.Generator(device="cpu").manual_seed(2)
        demos = torch.randint(3, config["vocab_size"], (2, 8 if args.dry_run else 64), generator=gen)
        query = torch.randint(3, config["vocab_size"], (2, 4 if args.dry_run else 32), generator=gen)
        errors = precision.compare(fast, ref, demos, query)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    verdicts = precision.verdict(errors, 1e-4)
    kernel, reference = errors["kernels"].logits, errors["reference"].logits
    return (f"equal: float32 vs float64, kernels from injected state ({fast.impl_name}) vs ref ops on demos+query",
            name, f"{kernel:.2e}", f"{reference:.2e} ref", f"{kernel / reference:.2f}x",
            "<= 2x and <= 1e-4: " + ("PASS" if all(verdicts.values()) else
                                     "FAIL (" + ", ".join(k for k, v in verdicts.items() if not v) + ")"))


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
    mamba_ssm = "yes" if skillsoup_kernels.mamba_chunk_scan() is not None else "no (skillsoup's Triton scan)"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"device: {where}; torch {torch.__version__}, triton {triton.__version__}; model dtype {args.dtype}; "
             f"mamba-ssm for Mamba-2 prefill: {mamba_ssm}; load average {load:.1f}",
             f"command: python benchmarks/bench_gpu.py {' '.join(sys.argv[1:] if argv is None else argv)}", ""]
    print("\n".join(lines), flush=True)

    mix_shape = "tiny" if args.dry_run else "mamba-2.8b"
    rows = bench_mix(mix_shape, catalog[mix_shape], device, args)
    for i, name in enumerate(names):
        rows += bench_model(name, catalog[name], device, dtype, args, first=i == 0)
        sync(device)
    if not args.skip_equal:
        first = names[0]
        rows.append(check_equal("mamba", first, catalog[first], device, args))
        m2_name, m2_config = ("tiny-mamba2", TINY_MAMBA2) if args.dry_run else ("mamba2-130m", MAMBA2_CHECK)
        rows.append(check_equal("mamba2", m2_name, m2_config, device, args))

    header = ("measurement", "shape", "ours", "baseline", "ratio", "goal")
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    print("\n".join(table))
    if args.markdown:
        Path(args.markdown).write_text("\n".join(lines + table) + "\n")
    return 1 if any("FAIL" in row[5] for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
