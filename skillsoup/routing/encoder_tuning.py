"""Contrastive tuning of the text encoder on the skills' own demonstrations (SetFit-style).

Each demonstration is paired with other demonstrations of its skill; a batch holds pairs of
distinct skills, so every other pair in the batch is a true negative. The loss is symmetric
in-batch InfoNCE on cosine similarities (scale 20, as sentence-transformers'
MultipleNegativesRankingLoss), one epoch, AdamW with linear warm-up and decay. Only the
demonstrations are trained on: labelled queries stay held out to judge the result (routing/tune.py).

The encoder is a sentence-transformers folder whose pipeline is transformer -> mean pooling
(-> normalize), as the default all-MiniLM-L6-v2; the tuned copy is written in the same layout
(safetensors weights), so :class:`skillsoup.embedding.MeanPooledEncoder` loads it like any other.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from skillsoup.errors import RoutingError

log = logging.getLogger(__name__)

# files of a sentence-transformers folder that describe its pipeline (not its weights or tokenizer)
_PIPELINE_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


@dataclass(frozen=True)
class TuningSettings:
    pairs_per_demo: int = 2  # positives drawn per demonstration
    batch_size: int = 32  # pairs per step (distinct skills)
    lr: float = 2e-5
    scale: float = 20.0  # inverse temperature of the cosine logits
    epochs: int = 1
    max_length: int = 64  # tokens per text while training (intents are short)
    seed: int = 0


@dataclass(frozen=True)
class TuningResult:
    folder: Path
    pairs: int
    steps: int
    seconds: float
    loss_first: float  # mean loss of the first and last tenth of the steps
    loss_last: float
    settings: dict


def training_pairs(demos: dict[str, list[str]], per_demo: int, rng: random.Random) -> list[tuple[str, str, str]]:
    """(skill, anchor, positive): each demonstration with up to ``per_demo`` others of its skill."""
    pairs = []
    for name in sorted(demos):
        texts = list(dict.fromkeys(t for t in demos[name] if t.strip()))  # repeated inputs are no positives
        for i, anchor in enumerate(texts):
            others = texts[:i] + texts[i + 1 :]
            pairs += [(name, anchor, p) for p in rng.sample(others, min(per_demo, len(others)))]
    return pairs


def distinct_batches(pairs: list[tuple[str, str, str]], size: int, rng: random.Random) -> list[list]:
    """Shuffled pairs packed into batches in which no skill appears twice (no false negatives)."""
    pool = list(pairs)
    rng.shuffle(pool)
    batches = []
    while pool:
        batch, seen, rest = [], set(), []
        for pair in pool:
            if len(batch) < size and pair[0] not in seen:
                batch.append(pair)
                seen.add(pair[0])
            else:
                rest.append(pair)
        if len(batch) > 1:  # a batch of one pair has no negative
            batches.append(batch)
        pool = rest if len(batch) > 1 else []
    return batches


def tune_encoder(base: Path, demos: dict[str, list[str]], out: Path, settings: TuningSettings = TuningSettings(),
                 progress: Callable[[int, int, float], None] | None = None) -> TuningResult:
    """Tune a copy of the encoder in folder ``base`` on ``demos`` (skill -> demonstration inputs)
    and write it to the folder ``out``. ``progress(step, steps, loss)`` after every step."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    from skillsoup.embedding import MeanPooledEncoder, quiet_loading

    if not MeanPooledEncoder.handles(base):
        raise RoutingError(f"encoder tuning needs a sentence-transformers folder with mean pooling (as the default "
                           f"all-MiniLM-L6-v2); {base} is not one")
    rng = random.Random(settings.seed)
    pairs = training_pairs(demos, settings.pairs_per_demo, rng)
    batches = [b for _ in range(settings.epochs) for b in distinct_batches(pairs, settings.batch_size, rng)]
    if not batches:
        raise RoutingError("encoder tuning needs at least two skills with two different demonstrations each")
    torch.manual_seed(settings.seed)
    with quiet_loading():
        tokenizer = AutoTokenizer.from_pretrained(base, local_files_only=True)
        net = AutoModel.from_pretrained(base, local_files_only=True)
    net.train()
    opt = torch.optim.AdamW(net.parameters(), lr=settings.lr, weight_decay=0.01)
    n, warm = len(batches), max(1, len(batches) // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (n - s) / (n - warm)))

    def encode(texts: list[str]) -> torch.Tensor:
        batch = tokenizer([t.strip() for t in texts], padding=True, truncation=True, max_length=settings.max_length,
                          return_tensors="pt")
        hidden = net(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1)

    t0, losses = time.perf_counter(), []
    with torch.enable_grad():
        for step, batch in enumerate(batches):
            sims = settings.scale * encode([p[1] for p in batch]) @ encode([p[2] for p in batch]).T
            target = torch.arange(len(batch))
            loss = (F.cross_entropy(sims, target) + F.cross_entropy(sims.T, target)) / 2
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            opt.step()
            schedule.step()
            losses.append(loss.item())
            if progress is not None:
                progress(step + 1, n, losses[-1])
    net.eval()
    with quiet_loading():  # transformers' "Writing model shards" bar
        _save(net, tokenizer, base, out)
    tenth = max(1, n // 10)
    result = TuningResult(out, len(pairs), n, time.perf_counter() - t0, sum(losses[:tenth]) / tenth,
                          sum(losses[-tenth:]) / tenth, asdict(settings))
    log.info("tuned the encoder on %d pairs of %d skills in %d steps, %.0f s (loss %.3f -> %.3f)", len(pairs),
             len(demos), n, result.seconds, result.loss_first, result.loss_last)
    return result


def _save(net, tokenizer, base: Path, out: Path) -> None:
    """The tuned transformer (safetensors) and tokenizer, with the base folder's pipeline files."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    for name in _PIPELINE_FILES:
        if (base / name).is_file():
            shutil.copyfile(base / name, out / name)
    for module in json.loads((base / "modules.json").read_text())[1:]:  # pooling, normalize: configs only
        if not module.get("path"):
            continue
        if (base / module["path"]).is_dir():
            shutil.copytree(base / module["path"], out / module["path"], dirs_exist_ok=True)
        else:  # Normalize has no files (and a package may leave its empty folder out)
            (out / module["path"]).mkdir(parents=True, exist_ok=True)
