"""Helpers shared by the tests (import with ``from helpers import ...``; tests/conftest.py puts
this folder on sys.path, so it works from every subfolder, whatever other conftest files exist)."""

from __future__ import annotations

import torch


def assert_close(name: str, actual: torch.Tensor, expected: torch.Tensor, ratio: float) -> None:
    """Relative error ||a - e|| / ||e|| must stay under ``ratio`` (fla-style)."""
    actual, expected = actual.double(), expected.double()
    assert actual.shape == expected.shape, f"{name}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{name}: non-finite values"
    err = (actual - expected).norm() / expected.norm().clamp_min(1e-12)
    assert err <= ratio, f"{name}: relative error {err:.3e} > {ratio:.1e}"


def tiny_config(arch: str, **overrides):
    from transformers import Mamba2Config, MambaConfig

    if arch == "mamba":
        cfg = dict(hidden_size=32, num_hidden_layers=2, state_size=8, conv_kernel=4, expand=2, time_step_rank=4,
                   vocab_size=97, pad_token_id=0, bos_token_id=1, eos_token_id=2)
        cfg.update(overrides)
        return MambaConfig(**cfg)
    cfg = dict(hidden_size=32, num_hidden_layers=2, state_size=8, conv_kernel=4, expand=2, head_dim=8,
               num_heads=8, n_groups=2, vocab_size=97, chunk_size=16, pad_token_id=0, bos_token_id=1,
               eos_token_id=2)
    cfg.update(overrides)
    return Mamba2Config(**cfg)


def build_checkpoint(path, arch: str, seed: int = 0, **overrides):
    """Save a random MambaForCausalLM / Mamba2ForCausalLM to ``path`` with a word-level tokenizer."""
    from transformers import Mamba2ForCausalLM, MambaForCausalLM

    torch.manual_seed(seed)
    cls = MambaForCausalLM if arch == "mamba" else Mamba2ForCausalLM
    model = cls(tiny_config(arch, **overrides))
    with torch.no_grad():  # larger, varied dt so decay matters in the tests
        for layer in model.backbone.layers:
            bias = layer.mixer.dt_proj.bias if arch == "mamba" else layer.mixer.dt_bias
            bias.uniform_(-3.0, 0.5)
    model.save_pretrained(path)
    save_tiny_tokenizer(path, model.config.vocab_size)
    return path


def save_tiny_tokenizer(path, vocab_size: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<s>", "</s>", "<unk>"] + [chr(c) for c in range(32, 127)]
    vocab = {w: i for i, w in enumerate(words[:vocab_size])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()  # characters join back without spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
                                   unk_token="<unk>")
    fast.save_pretrained(path)


def build_sentence_encoder(folder, words, max_seq_length: int = 64, lower: bool = False, seed: int = 0):
    """A sentence-transformers folder (tiny random BERT -> mean pooling -> normalize) over ``words``."""
    import json

    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ":"] + sorted(set(words))
    BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=lower).save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_mean_tokens": True, "pooling_mode_cls_token": False,
        "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length,
                                                                 "do_lower_case": lower}))
    return folder

