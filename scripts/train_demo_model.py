#!/usr/bin/env python
"""Train skillsoup's bundled demo model: a small character-level MambaForCausalLM that learns the 16
demo skills (skillsoup/demo/corpus.py) from few-shot episodes.

An episode is n pairs of one skill rendered with its template (n random in --min-pairs..--max-pairs,
inputs from the "train" split only); the loss is on every output (the text the model must write
after "Output:", including the newline that ends it), so the i-th output trains i-shot answering.
The model runs through StateModel.forward_with_grad (the exact parallel scan skillsoup uses at
inference), not through transformers' own Mamba forward.

Reproducible: the seed fixes the weights' init and the data order, and the learning-rate schedule
(linear warmup, cosine decay to 10%) depends on the step only, so a run of --steps steps is the same
on every machine (up to float rounding of the CPU's kernels). --minutes is a safety stop: a run cut
by it is saved as it stands and says so (training.json: "stopped_by": "minutes").

    python scripts/train_demo_model.py                      # the shipped checkpoint's recipe (--help defaults)

    python scripts/train_demo_model.py --steps 40 --out /tmp/smoke     # smoke run (a few minutes)

The shipped checkpoint ran these defaults alone on the 2-core CPU and was stopped by the 58-minute
budget after 2,171 of 2,400 steps (its training.json says so); a faster machine runs all 2,400.

Demo model v2 (corpus v2, skillsoup/demo/corpus_v2.py; a Mamba-2 of 7.6M parameters saved in bf16,
15.2 MB) is a preset; explicit flags override a preset's values:

    python scripts/train_demo_model.py --preset v2 --device cuda --out /tmp/v2    # the GPU recipe (7 min budget)
    python scripts/train_demo_model.py --preset v2-pilot --threads 1 --out /tmp/p  # a small CPU pilot

Why Mamba-2 for v2: its chunked scan trains through matrix products: forward + backward of 4 x 512
tokens on one CPU thread ran at 1,682 tok/s for a Mamba-2 (hidden 128, 4 layers, d_state 64) against
727 for a Mamba-1 of the same size with d_state 8 (304 with d_state 16), measured once on the busy
2-core machine; and its state is 4-8x larger per layer (heads x head dim x d_state = 2 x hidden x 64),
which copying names and addresses needs. On CUDA the model
trains through skillsoup's pure-PyTorch ops (the Triton kernels are forward-only; under autograd
they hand over to the same ops), with TF32 matrix products (--precision tf32, the CUDA default) or
bf16 autocast (--precision bf16). On CUDA a run is reproducible up to the float rounding of atomic
adds in the backward (same seed: same data, same init, the same loss curve to a few digits).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from skillsoup.demo import corpus, corpus_v2
from skillsoup.demo.tokenizer import PAD_ID, SPECIALS, UNK_ID, VOCAB, build_tokenizer

REPO = Path(__file__).resolve().parents[1]


# presets: the defaults of a recipe (flags given on the command line win). "v1" is the shipped checkpoint's.
PRESETS = {
    "v1": {},
    # 7.59M parameters (15.2 MB in bf16); batches of <= 49,152 padded tokens (~140 episodes of ~350
    # characters). One step, counted by benchmarks/count_train_step.py: ~6,000 kernels (12,600 ATen
    # calls with views), ~181 GB written, 2.7 TFLOP of matrix products, <= 33 GiB kept for backward.
    # On an H200 (~4 TB/s, TF32) that is ~0.1-0.15 s of memory traffic against ~0.1-0.15 s of host
    # dispatch + episode making: ~0.15 s/step, so 2,400 steps (118M tokens) take ~6 minutes and
    # fit the 8-minute stop even at 0.2 s/step. Estimated, not measured: the log prints tok/s.
    "v2": dict(corpus="v2", arch="mamba2", hidden=384, layers=8, state=64, head_dim=64, batch=128, batch_tokens=49152,
               min_pairs=1, max_pairs=9, steps=2400, lr=2e-3, warmup=100, minutes=7.0, eval_every=200, log_every=50,
               save_dtype="bfloat16", save_every_min=3.0, workers=4),
    # what one CPU thread trains in about 20 minutes: shows the loss fall and the eval run end to end
    "v2-pilot": dict(corpus="v2", arch="mamba2", hidden=128, layers=4, state=32, head_dim=32, batch=8, min_pairs=1,
                     max_pairs=9, steps=600, lr=4e-3, warmup=40, minutes=20.0, eval_every=100, threads=1),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="v1", help="a recipe's defaults (flags override)")
    p.add_argument("--corpus", choices=("v1", "v2"), default="v1", help="skillsoup/demo/corpus.py or corpus_v2.py")
    p.add_argument("--arch", choices=("mamba", "mamba2"), default="mamba", help="MambaForCausalLM or Mamba2ForCausalLM")
    p.add_argument("--head-dim", type=int, default=64, help="Mamba-2 head dim (heads = 2 * hidden / head dim)")
    p.add_argument("--precision", choices=("auto", "fp32", "tf32", "bf16"), default="auto",
                   help="fp32 everywhere; tf32 matrix products (CUDA); bf16 autocast; auto = tf32 on CUDA, fp32 on CPU")
    p.add_argument("--save-dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="weights' dtype on disk (load_model reads them back as float32)")
    p.add_argument("--out", default=str(REPO / "skillsoup" / "demo_model"), help="checkpoint folder to write")
    p.add_argument("--minutes", type=float, default=58.0, help="safety stop for the training loop (wall clock)")
    p.add_argument("--steps", type=int, default=2400, help="optimizer steps (the schedule's length)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--state", type=int, default=8, help="d_state")
    p.add_argument("--batch", type=int, default=8, help="episodes per step (with --batch-tokens: the pool is 16x this)")
    p.add_argument("--batch-tokens", type=int, default=0,
                   help="if set, batches of at most this many padded tokens instead of --batch episodes")
    p.add_argument("--min-pairs", type=int, default=3)
    p.add_argument("--max-pairs", type=int, default=9)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--warmup", type=int, default=40)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=100, help="teacher-forced held-out check")
    p.add_argument("--save-every-min", type=float, default=10.0, help="write the checkpoint this often")
    p.add_argument("--workers", type=int, default=0, help="processes making v2 episodes ahead of the trainer")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads (0 = torch's default); 1 is much faster while other processes keep the cores busy")
    preset = p.parse_known_args(argv)[0].preset
    p.set_defaults(**PRESETS[preset])
    args = p.parse_args(argv)
    if args.precision == "auto":
        args.precision = "tf32" if args.device.startswith("cuda") else "fp32"
    return args


class EpisodeStream:
    """Seeded, endless batches of episodes. Episodes are made in pools of 16 batches, sorted by
    length and cut into batches (little padding), and the batches of a pool are shuffled.

    v1 draws every pool from one running generator (the shipped checkpoint's stream). v2 seeds pool
    k on its own ("<seed>:<split>:<k>"), so ``workers`` processes can make the next pools while the
    model trains, and the stream is the same for any number of workers (0: made in this process)."""

    def __init__(self, seed: int, batch: int, min_pairs: int, max_pairs: int, split: str = "train", version: str = "v1",
                 batch_tokens: int = 0, workers: int = 0):
        self.rng = random.Random(seed)
        self.seed, self.batch, self.min_pairs, self.max_pairs = seed, batch, min_pairs, max_pairs
        self.split, self.version, self.batch_tokens = split, version, batch_tokens
        self._ready: list[list[tuple[str, list[tuple[int, int]]]]] = []
        self._pools = 0
        self._executor = self._pending = None
        if workers and version == "v2":
            import concurrent.futures
            import multiprocessing

            self._executor = concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            self._pending = [self._submit(k) for k in range(workers)]

    def _pool_args(self, k: int):
        return f"{self.seed}:{self.split}:{k}", 16 * self.batch, self.min_pairs, self.max_pairs, self.split

    def _submit(self, k: int):
        return self._executor.submit(corpus_v2.training_pool, *self._pool_args(k))

    def _next_pool(self) -> list:
        k = self._pools
        self._pools += 1
        if self.version == "v1":
            return [self._v1_episode() for _ in range(16 * self.batch)]
        if self._executor is None:
            return corpus_v2.training_pool(*self._pool_args(k))
        self._pending.append(self._submit(k + len(self._pending)))
        return self._pending.pop(0).result()

    def _v1_episode(self):
        n = self.rng.randint(self.min_pairs, self.max_pairs)
        skill, demos, query, answer = corpus.episode(self.rng, n - 1, self.split)
        return corpus.render_episode(skill, demos + [corpus.Demonstration(query, answer)])

    def _by_tokens(self, pool):
        """Cut a length-sorted pool into batches of at most ``batch_tokens`` padded tokens (rows x
        longest row): long episodes come in fewer rows, so memory and step time stay level."""
        batches, current = [], []
        for episode in pool:
            if current and (len(current) + 1) * len(episode[0]) > self.batch_tokens:
                batches.append(current)
                current = []
            current.append(episode)
        return batches + [current] * bool(current)

    def __iter__(self):
        return self

    def __next__(self):
        if not self._ready:
            order = self.rng if self.version == "v1" else random.Random(f"{self.seed}:{self.split}:{self._pools}:order")
            pool = sorted(self._next_pool(), key=lambda e: len(e[0]))
            self._ready = self._by_tokens(pool) if self.batch_tokens else [
                pool[i : i + self.batch] for i in range(0, len(pool), self.batch)]
            order.shuffle(self._ready)
        return self._ready.pop()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)


# byte -> token id for the character tokenizer (every printable ASCII character and "\n")
_BYTE_ID = torch.full((256,), UNK_ID, dtype=torch.long)
_BYTE_ID[0] = PAD_ID
for _i, _c in enumerate(VOCAB[len(SPECIALS):], len(SPECIALS)):
    _BYTE_ID[ord(_c)] = _i


def encode_batch(episodes, device):
    """-> ids [b, l] (right-padded), targets [b, l] (-100 except on output characters). Targets
    are aligned with logits: logits[:, t] predicts ids[:, t + 1]. Built in numpy (1 char = 1 token),
    two tensor ops in all: a v2 batch of 49k tokens is a few milliseconds."""
    length = max(len(text) for text, _ in episodes)
    chars = np.zeros((len(episodes), length), dtype=np.uint8)  # byte 0 maps to <pad>
    keep = np.zeros((len(episodes), length), dtype=bool)
    for row, (text, spans) in enumerate(episodes):
        chars[row, : len(text)] = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
        for start, end in spans:
            keep[row, start:end] = True
    ids = _BYTE_ID[torch.from_numpy(chars).long()]
    targets = torch.full_like(ids, -100)
    targets[:, :-1] = ids[:, 1:].masked_fill(~torch.from_numpy(keep[:, 1:]), -100)
    return ids.to(device), targets.to(device)


def model_config(args):
    """-> (transformers model class, its config) for ``args``."""
    from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

    common = dict(vocab_size=len(VOCAB), hidden_size=args.hidden, num_hidden_layers=args.layers, state_size=args.state,
                  expand=2, conv_kernel=4, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    if args.arch == "mamba":
        return MambaForCausalLM, MambaConfig(**common)
    if (2 * args.hidden) % args.head_dim:
        raise SystemExit(f"--head-dim {args.head_dim} must divide 2 * --hidden ({2 * args.hidden})")
    return Mamba2ForCausalLM, Mamba2Config(**common, head_dim=args.head_dim, num_heads=2 * args.hidden // args.head_dim,
                                           n_groups=1, chunk_size=64)


def build_model(args):
    from skillsoup.models import StateModel

    torch.manual_seed(args.seed)
    cls, config = model_config(args)
    hf = cls(config).to(args.device)
    model = StateModel(hf, build_tokenizer(), fingerprint="train", source="training", impl="ref")
    hf.train()
    return model


def param_groups(hf, weight_decay):
    decay, no_decay = [], []
    for name, p in hf.named_parameters():
        (decay if p.dim() >= 2 and "A_log" not in name else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def lr_at(progress: float, step: int, args) -> float:
    warm = min(1.0, (step + 1) / args.warmup)
    return args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


@torch.no_grad()
def heldout_check(model, batches, device) -> tuple[float, float]:
    """Teacher-forced on held-out episodes: (output-character accuracy, share of final answers whose
    every character is the argmax, i.e. greedy decoding would write them exactly)."""
    model.hf.eval()
    right = total = exact = answers = 0
    for episodes in batches:
        ids, targets = encode_batch(episodes, device)
        logits, _ = model.forward(ids)
        hit = (logits.argmax(-1) == targets) | (targets == -100)
        mask = targets != -100
        right += int((hit & mask).sum())
        total += int(mask.sum())
        for row, (_, spans) in enumerate(episodes):
            start, end = spans[-1]
            exact += bool(hit[row, start - 1 : end - 1].all())
            answers += 1
    model.hf.train()
    return right / max(total, 1), exact / max(answers, 1)


def save(model, out: Path, record: dict, dtype: str = "float32") -> None:
    """The checkpoint in ``dtype`` (a cast copy: training goes on in float32)."""
    out.mkdir(parents=True, exist_ok=True)
    hf = model.hf if dtype == "float32" else copy.deepcopy(model.hf).to(getattr(torch, dtype))
    hf.save_pretrained(out)
    model.tokenizer.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")


def precision_context(args):
    """-> a context manager for the forward (bf16 autocast, or nothing); sets TF32 where asked."""
    if args.precision == "tf32":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.precision == "bf16":
        return lambda: torch.autocast(device_type=torch.device(args.device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    model = build_model(args)
    hf = model.hf
    n_params = sum(p.numel() for p in hf.parameters())
    autocast = precision_context(args)
    print(f"model: {args.arch}, hidden {args.hidden}, {args.layers} layers, d_state {args.state}, {n_params / 1e6:.2f}M "
          f"params ({n_params * 4 / 2**20:.1f} MiB fp32); corpus {args.corpus}; {args.device}, {args.precision}; "
          f"torch threads {torch.get_num_threads()}", flush=True)
    opt = torch.optim.AdamW(param_groups(hf, args.weight_decay), lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    stream = EpisodeStream(args.seed, args.batch, args.min_pairs, args.max_pairs, version=args.corpus,
                           batch_tokens=args.batch_tokens, workers=args.workers)
    check_stream = EpisodeStream(args.seed + 1, 32, 5, 5, split="heldout", version=args.corpus)  # 4 demos + query
    check_batches = [next(check_stream) for _ in range(2)]
    out = Path(args.out)
    record = {"args": vars(args), "params": n_params, "device": device_name(args.device), "log": []}
    t_start = last_save = time.time()
    tokens = run_n = 0
    run_loss = torch.zeros((), device=args.device)  # summed on the device: no host sync per step
    t_log = time.time()
    step = 0
    progress = 0.0
    while progress < 1.0:
        episodes = next(stream)
        ids, targets = encode_batch(episodes, args.device)
        lr = lr_at(progress, step, args)
        for group in opt.param_groups:
            group["lr"] = lr
        with autocast():
            logits, _ = model.forward_with_grad(ids)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += ids.numel()
        run_loss += loss.detach()
        run_n += 1
        elapsed = time.time() - t_start
        progress = step / args.steps
        if elapsed > args.minutes * 60 and progress < 1.0:
            print(f"time budget of {args.minutes} min spent after {step} of {args.steps} steps; stopping early",
                  flush=True)
            progress = 1.0
        if step % args.log_every == 0 or progress >= 1.0:
            mean_loss = float(run_loss) / run_n  # the one host sync of a logging period
            now = time.time()
            entry = {"step": step, "loss": mean_loss, "lr": lr, "tok_s": tokens / (now - t_log), "min": elapsed / 60}
            if step % args.eval_every == 0 or progress >= 1.0:
                entry["heldout_char_acc"], entry["heldout_exact_4shot"] = heldout_check(model, check_batches, args.device)
            record["log"].append(entry)
            extra = (f"  held-out 4-shot: char acc {entry['heldout_char_acc']:.3f}, exact {entry['heldout_exact_4shot']:.3f}"
                     if "heldout_char_acc" in entry else "")
            print(f"step {step:5d}  loss {entry['loss']:.4f}  lr {lr:.2e}  {entry['tok_s']:.0f} tok/s  "
                  f"{entry['min']:.1f} min{extra}", flush=True)
            tokens = run_n = 0
            run_loss.zero_()
            t_log = time.time()
        if time.time() - last_save > args.save_every_min * 60:
            record.update(steps=step, minutes=elapsed / 60, finished=False)
            save(model, out, record, args.save_dtype)
            last_save = time.time()
    stream.close()
    record.update(steps=step, minutes=(time.time() - t_start) / 60, finished=True,
                  stopped_by="steps" if step >= args.steps else "minutes")
    save(model, out, record, args.save_dtype)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"saved {out} ({size / 2**20:.2f} MiB, {args.save_dtype}) after {step} steps, {record['minutes']:.1f} min "
          f"(stopped by {record['stopped_by']})", flush=True)
    return 0


def device_name(device: str) -> str:
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    import platform

    return f"CPU ({platform.processor() or platform.machine()})"


if __name__ == "__main__":
    sys.exit(main())
