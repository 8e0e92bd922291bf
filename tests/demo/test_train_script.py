"""scripts/train_demo_model.py: the v2 preset's size, reproducible runs, bf16 weights that load_model
reads back, the bf16 autocast branch (run on the CPU), the time-budget stop, token-budget batches."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_demo_model.py"
TINY = ["--preset", "v2-pilot", "--hidden", "16", "--layers", "1", "--head-dim", "8", "--state", "8", "--batch", "2",
        "--max-pairs", "2", "--steps", "2", "--log-every", "1", "--eval-every", "2", "--threads", "1"]


@pytest.fixture(scope="module")
def train():
    spec = importlib.util.spec_from_file_location("train_demo_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_v2_preset_fits_the_issue_budget(train):
    """<= 8M parameters and <= 16 MB of bf16 weights."""
    args = train.parse_args(["--preset", "v2", "--device", "cpu"])
    assert (args.corpus, args.arch, args.save_dtype, args.precision) == ("v2", "mamba2", "bfloat16", "fp32")
    assert train.parse_args(["--preset", "v2", "--device", "cuda"]).precision == "tf32"
    assert train.parse_args(["--preset", "v2", "--hidden", "64"]).hidden == 64  # flags win over the preset
    cls, config = train.model_config(args)
    with torch.device("meta"):  # shapes only
        n_params = sum(p.numel() for p in cls(config).parameters())
    assert n_params <= 8_000_000 and 2 * n_params <= 16_000_000


def test_same_seed_same_weights_and_bf16_loads_as_float32(train, tmp_path):
    from skillsoup.models import load_model

    for name in ("a", "b"):
        assert train.main(TINY + ["--out", str(tmp_path / name)]) == 0
    a, b = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert train.main(TINY + ["--out", str(tmp_path / "c"), "--save-dtype", "bfloat16"]) == 0
    half = _weights(tmp_path / "c")
    assert {t.dtype for t in half.values()} == {torch.bfloat16}
    assert all(torch.equal(half[k], a[k].to(torch.bfloat16)) for k in a)
    model = load_model(tmp_path / "c")
    assert model.arch == "mamba2" and model.dtype == torch.float32
    ids = model.encode("Input: add 2 and 3\nOutput:")
    logits, _ = model.forward([ids])
    assert torch.isfinite(logits).all()
    record = json.loads((tmp_path / "c" / "training.json").read_text())
    assert record["stopped_by"] == "steps" and record["args"]["corpus"] == "v2"


def test_bf16_autocast_branch_trains(train, tmp_path):
    """The branch --device cuda --precision bf16 takes, run under CPU autocast: a finite, logged loss."""
    assert train.main(TINY + ["--out", str(tmp_path), "--precision", "bf16"]) == 0
    log = json.loads((tmp_path / "training.json").read_text())["log"]
    assert len(log) == 2 and all(0 < e["loss"] < 20 for e in log)


def test_time_budget_stops_and_saves(train, tmp_path):
    assert train.main(TINY + ["--out", str(tmp_path), "--steps", "1000", "--minutes", "0"]) == 0
    record = json.loads((tmp_path / "training.json").read_text())
    assert record["stopped_by"] == "minutes" and record["steps"] == 1 and (tmp_path / "model.safetensors").is_file()


def test_token_budget_batches(train):
    stream = train.EpisodeStream(0, 16, 1, 9, version="v2", batch_tokens=2000)
    for _ in range(40):
        batch = next(stream)
        assert len(batch) * max(len(text) for text, _ in batch) <= max(2000, len(batch[0][0]))


def test_v2_stream_is_the_same_with_worker_processes(train):
    """Pools are seeded one by one, so making them in other processes changes nothing."""
    here = train.EpisodeStream(3, 8, 1, 9, version="v2", batch_tokens=3000)
    there = train.EpisodeStream(3, 8, 1, 9, version="v2", batch_tokens=3000, workers=2)
    try:
        assert [next(here) for _ in range(30)] == [next(there) for _ in range(30)]
    finally:
        there.close()


def test_encode_batch_targets_are_the_answers(train):
    from skillsoup.demo.tokenizer import VOCAB

    episodes = [next(train.EpisodeStream(1, 4, 2, 3, version="v2"))[0], ("ab\ncd", [(2, 5)])]
    ids, targets = train.encode_batch(episodes, "cpu")
    for row, (text, spans) in enumerate(episodes):
        assert "".join(VOCAB[i] for i in ids[row, : len(text)].tolist()) == text
        wanted = {t - 1 for s, e in spans for t in range(s, e)}
        for t in range(ids.shape[1]):
            assert int(targets[row, t]) == (int(ids[row, t + 1]) if t in wanted else -100)
