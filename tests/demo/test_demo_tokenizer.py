"""The demo model's character tokenizer round-trips every corpus text and loads like any checkpoint's."""

from __future__ import annotations

import random

from skillsoup.demo import corpus
from skillsoup.demo.tokenizer import BOS_ID, EOS_ID, PAD_ID, VOCAB, build_tokenizer


def test_round_trip_of_corpus_text(tmp_path):
    tok = build_tokenizer()
    rng = random.Random(0)
    texts = [corpus.render_episode(s, d + [corpus.Demonstration(q, a)])[0]
             for s, d, q, a in (corpus.episode(rng, 8) for _ in range(200))]
    texts.append("".join(VOCAB[4:]))  # every character once
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        assert len(ids) == len(text)
        assert ids == [VOCAB.index(c) for c in text]
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_saved_tokenizer_loads_back(tmp_path):
    from transformers import AutoTokenizer

    build_tokenizer().save_pretrained(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (PAD_ID, BOS_ID, EOS_ID)
    text = 'Input: Ana <a@b.io>\nOutput: {"name": "Ana"}\n'
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
