"""The demo model's character tokenizer: one token per printable ASCII character and newline.

Saved as ``tokenizer.json`` with :class:`transformers.PreTrainedTokenizerFast`, so ``load_model(dir)``
finds it like any checkpoint's tokenizer. Ids: 0 <pad>, 1 <s>, 2 </s>, 3 <unk>, then ' '..'~', then
'\\n' (the same layout as ``skillsoup demo``'s random model).
"""

from __future__ import annotations

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
CHARS = tuple(chr(c) for c in range(32, 127)) + ("\n",)
VOCAB = SPECIALS + CHARS  # 100 tokens
PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3


def build_tokenizer():
    """-> PreTrainedTokenizerFast that splits text into single characters and decodes by joining."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={c: i for i, c in enumerate(VOCAB)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok.decoder = decoders.Fuse()  # join characters as they are (WordLevel's default puts spaces between)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>"
    )


def is_encodable(text: str) -> bool:
    """True when every character of ``text`` has its own token (no <unk>)."""
    return all(c in _CHAR_SET for c in text)


_CHAR_SET = frozenset(CHARS)
