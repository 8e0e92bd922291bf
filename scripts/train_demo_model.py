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
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from skillsoup.demo import corpus
from skillsoup.demo.tokenizer import PAD_ID, VOCAB, build_tokenizer

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=str(REPO / "skillsoup" / "demo_model"), help="checkpoint folder to write")
    p.add_argument("--minutes", type=float, default=58.0, help="safety stop for the training loop (wall clock)")
    p.add_argument("--steps", type=int, default=2400, help="optimizer steps (the schedule's length)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--state", type=int, default=8, help="d_state")
    p.add_argument("--batch", type=int, default=8, help="episodes per step")
    p.add_argument("--min-pairs", type=int, default=3)
    p.add_argument("--max-pairs", type=int, default=9)
    p.add_argument("--lr", type=float, default=4e-3)
    p.add_argument("--warmup", type=int, default=40)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--eval-every", type=int, default=100, help="teacher-forced held-out check")
    p.add_argument("--save-every-min", type=float, default=10.0, help="write the checkpoint this often")
    p.add_argument("--threads", type=int, default=2,
                   help="torch threads (0 = torch's default); 1 is much faster while other processes keep the cores busy")
    return p.parse_args(argv)


class EpisodeStream:
    """Seeded, endless batches of episodes. Episodes are made in pools of 16 batches, sorted by
    length and cut into batches (little padding), and the batches of a pool are shuffled."""

    def __init__(self, seed: int, batch: int, min_pairs: int, max_pairs: int, split: str = "train"):
        self.rng = random.Random(seed)
        self.batch, self.min_pairs, self.max_pairs, self.split = batch, min_pairs, max_pairs, split
        self._ready: list[list[tuple[str, list[tuple[int, int]]]]] = []

    def _episode(self):
        n = self.rng.randint(self.min_pairs, self.max_pairs)
        skill, demos, query, answer = corpus.episode(self.rng, n - 1, self.split)
        return corpus.render_episode(skill, demos + [corpus.Demonstration(query, answer)])

    def __iter__(self):
        return self

    def __next__(self):
        if not self._ready:
            pool = sorted((self._episode() for _ in range(16 * self.batch)), key=lambda e: len(e[0]))
            self._ready = [pool[i : i + self.batch] for i in range(0, len(pool), self.batch)]
            self.rng.shuffle(self._ready)
        return self._ready.pop()


_CHAR_ID = {c: i for i, c in enumerate(VOCAB)}


def encode_batch(episodes, device):
    """-> ids [b, l] (right-padded), targets [b, l] (-100 except on output characters). Targets
    are aligned with logits: logits[:, t] predicts ids[:, t + 1]."""
    length = max(len(text) for text, _ in episodes)
    ids = torch.full((len(episodes), length), PAD_ID, dtype=torch.long)
    targets = torch.full((len(episodes), length), -100, dtype=torch.long)
    for row, (text, spans) in enumerate(episodes):
        row_ids = torch.tensor([_CHAR_ID[c] for c in text], dtype=torch.long)  # char-level: 1 char = 1 token
        ids[row, : len(text)] = row_ids
        for start, end in spans:
            targets[row, start - 1 : end - 1] = row_ids[start:end]
    return ids.to(device), targets.to(device)


def build_model(args):
    from transformers import MambaConfig, MambaForCausalLM

    from skillsoup.models import StateModel

    torch.manual_seed(args.seed)
    config = MambaConfig(
        vocab_size=len(VOCAB), hidden_size=args.hidden, num_hidden_layers=args.layers, state_size=args.state,
        expand=2, conv_kernel=4, pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=True,
    )
    hf = MambaForCausalLM(config).to(args.device)
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


def save(model, out: Path, record: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.hf.save_pretrained(out)
    model.tokenizer.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    model = build_model(args)
    hf = model.hf
    n_params = sum(p.numel() for p in hf.parameters())
    print(f"model: hidden {args.hidden}, {args.layers} layers, d_state {args.state}, {n_params / 1e6:.2f}M params "
          f"({n_params * 4 / 2**20:.1f} MiB fp32); torch threads {torch.get_num_threads()}", flush=True)
    opt = torch.optim.AdamW(param_groups(hf, args.weight_decay), lr=args.lr, betas=(0.9, 0.98), eps=1e-8)
    stream = EpisodeStream(args.seed, args.batch, args.min_pairs, args.max_pairs)
    check_stream = EpisodeStream(args.seed + 1, 32, 5, 5, split="heldout")  # 4 demos + query
    check_batches = [next(check_stream) for _ in range(2)]
    out = Path(args.out)
    record = {"args": vars(args), "params": n_params, "log": []}
    t_start = last_save = time.time()
    tokens = run_loss = run_n = 0
    t_log = time.time()
    step = 0
    progress = 0.0
    while progress < 1.0:
        episodes = next(stream)
        ids, targets = encode_batch(episodes, args.device)
        lr = lr_at(progress, step, args)
        for group in opt.param_groups:
            group["lr"] = lr
        logits, _ = model.forward_with_grad(ids)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()
        step += 1
        tokens += ids.numel()
        run_loss += float(loss.detach())
        run_n += 1
        elapsed = time.time() - t_start
        progress = step / args.steps
        if elapsed > args.minutes * 60 and progress < 1.0:
            print(f"time budget of {args.minutes} min spent after {step} of {args.steps} steps; stopping early",
                  flush=True)
            progress = 1.0
        if step % args.log_every == 0 or progress >= 1.0:
            now = time.time()
            entry = {"step": step, "loss": run_loss / run_n, "lr": lr, "tok_s": tokens / (now - t_log), "min": elapsed / 60}
            if step % args.eval_every == 0 or progress >= 1.0:
                entry["heldout_char_acc"], entry["heldout_exact_4shot"] = heldout_check(model, check_batches, args.device)
            record["log"].append(entry)
            extra = (f"  held-out 4-shot: char acc {entry['heldout_char_acc']:.3f}, exact {entry['heldout_exact_4shot']:.3f}"
                     if "heldout_char_acc" in entry else "")
            print(f"step {step:5d}  loss {entry['loss']:.4f}  lr {lr:.2e}  {entry['tok_s']:.0f} tok/s  "
                  f"{entry['min']:.1f} min{extra}", flush=True)
            tokens = run_loss = run_n = 0
            t_log = now
        if time.time() - last_save > args.save_every_min * 60:
            record.update(steps=step, minutes=elapsed / 60, finished=False)
            save(model, out, record)
            last_save = time.time()
    record.update(steps=step, minutes=(time.time() - t_start) / 60, finished=True,
                  stopped_by="steps" if step >= args.steps else "minutes")
    save(model, out, record)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    print(f"saved {out} ({size / 2**20:.2f} MiB) after {step} steps, {record['minutes']:.1f} min "
          f"(stopped by {record['stopped_by']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
