"""Exactness on CUDA (issue 14, item 5): each path against a float64 twin of the model, layer by layer.

    python benchmarks/gpu_exactness.py                       # CUDA: mamba-130m and mamba2-130m shapes
    python benchmarks/gpu_exactness.py --cpu                 # CPU: the reference path at the full shapes
    TRITON_INTERPRET=1 python benchmarks/gpu_exactness.py --cpu --kernels --hidden 64 --layers 4
                                                             # CPU: the Triton kernels too, on a small shape

Paths (random weights, float32, TF32 off; 2 rows of 64 demonstration + 32 query tokens):
  kernels              capture(demos) then the query, on the Triton kernels (impl="triton")
  reference            demos + query in one pass on the PyTorch ops (impl="ref")
  reference, injected  capture(demos) then the query on the PyTorch ops
each against the same weights in float64 (skillsoup.models.precision.float64_twin). Goals: the kernel
path's error on the query logits is at most 2x the reference path's, and at most 1e-4 (Mamba-1 on
the mamba-130m shape). The per-layer table shows where the error grows; the per-op table (Mamba-1)
what each op adds by itself when fed the float64 layer's own inputs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_gpu import MAMBA2_CHECK, SHAPES  # noqa: E402

LIMIT = 1e-4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cpu", action="store_true", help="run on the CPU (the reference path; --kernels to add them)")
    p.add_argument("--kernels", action="store_true", help="with --cpu: the Triton kernels through TRITON_INTERPRET=1")
    p.add_argument("--shape", default="mamba-130m", choices=list(SHAPES))
    p.add_argument("--hidden", type=int, help="override the hidden size (a smaller model for the interpreter)")
    p.add_argument("--layers", type=int, help="override the number of layers")
    p.add_argument("--arch", default="mamba,mamba2", help="comma-separated: mamba, mamba2")
    p.add_argument("--rows", type=int, default=2)
    p.add_argument("--demo-tokens", type=int, default=64)
    p.add_argument("--query-tokens", type=int, default=32)
    p.add_argument("--op-layers", default="1,-1", help="layers whose ops are checked one by one (Mamba-1)")
    p.add_argument("--out", help="also write the tables (markdown) to this file")
    return p.parse_args(argv)


def build(arch: str, args, device):
    from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

    config = dict(SHAPES[args.shape]) if arch == "mamba" else dict(MAMBA2_CHECK)
    if args.hidden:
        config["hidden_size"] = args.hidden
        if arch == "mamba2":
            config["num_heads"] = max(1, 2 * args.hidden // config["head_dim"])
    if args.layers:
        config["num_hidden_layers"] = args.layers
    torch.manual_seed(0)
    config_cls, model_cls = (MambaConfig, MambaForCausalLM) if arch == "mamba" else (Mamba2Config, Mamba2ForCausalLM)
    with torch.device(device):
        return model_cls(config_cls(**config)).float().eval(), config


def wrap(hf, impl: str, name: str):
    from skillsoup.models.base import StateModel

    model = StateModel(hf, fingerprint=f"exact-{name}", source=name, impl="ref")
    if impl == "triton":  # dispatch refuses the kernels off CUDA; under the interpreter swap them in by hand
        import skillsoup_kernels

        model._ops, model.impl_name = skillsoup_kernels.model_ops, "triton"
    return model


def check(arch: str, args, device, lines: list[str]) -> bool:
    from skillsoup.models import precision

    hf, config = build(arch, args, device)
    name = f"{arch} hidden {config['hidden_size']} x {config['num_hidden_layers']} layers"
    kernels = not args.cpu or args.kernels
    ref = wrap(hf, "ref", name)
    fast = wrap(hf, "triton", name) if kernels else ref
    gen = torch.Generator().manual_seed(2)
    demos = torch.randint(3, config["vocab_size"], (args.rows, args.demo_tokens), generator=gen)
    query = torch.randint(3, config["vocab_size"], (args.rows, args.query_tokens), generator=gen)
    started = time.perf_counter()
    twin = precision.float64_twin(ref)
    errors = precision.compare(fast, ref, demos, query, twin=twin)
    if not kernels:
        del errors["kernels"]
    ref_err = errors["reference"].logits
    lines += [f"\n### {name} ({'kernels: ' + fast.impl_name if kernels else 'reference path only'}; "
              f"{args.rows} rows x {args.demo_tokens} + {args.query_tokens} tokens; {time.perf_counter() - started:.0f} s)",
              "", "| path | query logits: rel err vs float64 | vs reference |", "|---|---|---|"]
    for e in errors.values():
        lines.append(f"| {e.name} | {e.logits:.2e} | {e.logits / ref_err:.2f}x |")
    ok = True
    if kernels:
        verdicts = precision.verdict(errors, LIMIT)
        ok = all(verdicts.values())
        lines.append("\n" + ", ".join(f"kernels {k}: {'PASS' if v else 'FAIL'}" for k, v in verdicts.items()))
    lines += ["", "| after layer | " + " | ".join(errors) + " |", "|---" * (len(errors) + 1) + "|"]
    n_layers = config["num_hidden_layers"]
    for i in sorted({0, 1, 2, n_layers // 4, n_layers // 2, 3 * n_layers // 4, n_layers - 1} & set(range(n_layers))):
        lines.append(f"| {i} | " + " | ".join(f"{e.layers[i]:.2e}" for e in errors.values()) + " |")
    if arch == "mamba":
        lines += ["", "| op (its own inputs from float64) | layer | reference ops | kernels |", "|---|---|---|---|"]
        ids = torch.cat([demos, query], dim=1)
        for layer in (int(x) % n_layers for x in args.op_layers.split(",")):
            from skillsoup.models import dispatch

            ref_ops = precision.mamba1_op_errors(ref, twin, ids, layer, dispatch.REF_OPS)
            kern_ops = precision.mamba1_op_errors(fast, twin, ids, layer, fast._ops) if kernels else {}
            for op, err in ref_ops.items():
                lines.append(f"| {op} | {layer} | {err:.2e} | {kern_ops[op]:.2e} |" if kern_ops
                             else f"| {op} | {layer} | {err:.2e} | - |")
    return ok


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cpu:
        device = torch.device("cpu")
        if args.kernels and os.environ.get("TRITON_INTERPRET") != "1":
            sys.exit("--kernels on CPU needs TRITON_INTERPRET=1 (set before Python starts)")
    elif not torch.cuda.is_available():
        sys.exit("gpu_exactness.py needs CUDA; run with --cpu for the reference path on this machine")
    else:
        device = torch.device("cuda")
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [f"device: {where}; torch {torch.__version__}; float32 models, TF32 off; load average {load:.1f}",
             f"command: python benchmarks/gpu_exactness.py {' '.join(sys.argv[1:] if argv is None else argv)}"]
    ok, printed = True, 0
    try:
        for arch in [a.strip() for a in args.arch.split(",") if a.strip()]:
            ok &= check(arch, args, device, lines)
            print("\n".join(lines[printed:]), flush=True)  # each model's tables as soon as they are ready
            printed = len(lines)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
