#!/usr/bin/env python
"""What one training step of a demo-model recipe asks of a GPU, counted on the CPU: the number of
ATen kernels (forward + backward + AdamW), the bytes they write (views excluded), and the FLOPs of their matrix
products, for the recipe's real config at a small batch (kernel counts do not depend on the batch;
bytes and FLOPs grow with it, and are scaled to the recipe's batch).

Used to size the v2 preset of scripts/train_demo_model.py before a GPU session: a GPU step costs
about max(launch time of the kernels, bytes / memory bandwidth, FLOPs / matrix throughput). The
numbers below are counts, not timings, so the machine's load does not change them.

    python benchmarks/count_train_step.py --preset v2 --length 350
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parents[1]
_MATMULS = {"mm", "bmm", "addmm", "baddbmm", "convolution", "convolution_backward"}


class Counting(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops, self.bytes, self.flops = Counter(), 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        returns = func._schema.returns
        if returns and returns[0].alias_info is not None and not name.endswith("_"):
            return out  # a view: no kernel, no bytes
        self.ops[name] += 1
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.bytes += t.numel() * t.element_size()
        if name in ("mm", "addmm", "bmm", "baddbmm"):
            a, b = (args[1], args[2]) if name in ("addmm", "baddbmm") else (args[0], args[1])
            self.flops += 2 * a.numel() * b.shape[-1]
        return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="v2")
    p.add_argument("--length", type=int, default=350, help="tokens per row (a batch's longest episode)")
    p.add_argument("--rows", type=int, default=2, help="rows counted (scaled to the preset's batch)")
    args = p.parse_args(argv)
    spec = importlib.util.spec_from_file_location("train_demo_model", REPO / "scripts" / "train_demo_model.py")
    train = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = train
    spec.loader.exec_module(train)
    targs = train.parse_args(["--preset", args.preset, "--device", "cpu", "--threads", "1"])
    model = train.build_model(targs)
    opt = torch.optim.AdamW(train.param_groups(model.hf, targs.weight_decay), lr=1e-3)
    ids = torch.randint(4, 100, (args.rows, args.length))
    counts = []
    saved = []

    def keep(t):
        saved.append(t.numel() * t.element_size())
        return t

    for _ in range(2):  # the first step also creates AdamW's state
        saved.clear()
        with Counting() as c, torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
            logits, _ = model.forward_with_grad(ids)
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.hf.parameters(), 1.0)
            opt.step()
        counts.append(c)
    rows = targs.batch_tokens // args.length if targs.batch_tokens else targs.batch
    c, scale = counts[-1], rows / args.rows
    n_params = sum(p.numel() for p in model.hf.parameters())
    print(f"preset {args.preset}: {n_params / 1e6:.2f}M params, batch {rows} x {args.length} tokens")
    print(f"saved for backward (an upper bound: some are views of one another): {sum(saved) * scale / 2**30:.1f} GiB")
    print(f"kernels per step: {sum(c.ops.values())} (top: {', '.join(f'{k} {v}' for k, v in c.ops.most_common(8))})")
    print(f"bytes written per step at batch {rows}: {c.bytes * scale / 1e9:.2f} GB")
    print(f"matmul FLOPs per step at batch {rows}: {c.flops * scale / 1e12:.3f} TFLOP "
          f"(6 x params x tokens = {6 * n_params * targs.batch * args.length / 1e12:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
