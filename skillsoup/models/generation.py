"""Sampling loop: one parallel forward over the prompt, then one cheap ``step`` per new token."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from skillsoup.errors import GenerationError

MAX_NEW_TOKENS = 4096


def check_generation_options(max_new_tokens=64, temperature=0.0, top_p=1.0, top_k=None, seed=None) -> None:
    """The one check of sampling options (the runtime, the server and ``generate`` use it)."""
    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    def is_number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if not is_int(max_new_tokens) or not 0 <= max_new_tokens <= MAX_NEW_TOKENS:
        raise GenerationError(f"max_new_tokens must be an integer from 0 to {MAX_NEW_TOKENS}, got {max_new_tokens!r}")
    if not is_number(temperature) or temperature < 0:
        raise GenerationError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature!r}")
    if not is_number(top_p) or not 0 < top_p <= 1:
        raise GenerationError(f"top_p must be in (0, 1], got {top_p!r}")
    if top_k is not None and (not is_int(top_k) or top_k < 1):
        raise GenerationError(f"top_k must be a positive integer or None, got {top_k!r}")
    if seed is not None and not is_int(seed):
        raise GenerationError(f"seed must be an integer or None, got {seed!r}")


def sample(logits: torch.Tensor, temperature: float, top_p: float, top_k: int | None, generator) -> int:
    """logits [vocab] -> token id. temperature 0 is greedy (argmax, first index on ties)."""
    if temperature == 0:
        return int(torch.argmax(logits))
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.numel():
        kth = torch.topk(logits, top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if top_p < 1:
        sorted_p, order = torch.sort(probs, descending=True)
        keep = torch.cumsum(sorted_p, 0) - sorted_p < top_p  # always keeps the first
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))


def eos_ids(model) -> tuple[int, ...]:
    """The token ids that end an answer by default: the tokenizer's EOS, if it has one."""
    eos = getattr(model.tokenizer, "eos_token_id", None) if model.tokenizer is not None else None
    return (eos,) if eos is not None else ()


def generate_ids(
    model, prompt, state=None, *, max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0,
    top_k: int | None = None, seed: int | None = None, stop_ids: tuple[int, ...] | None = None,
) -> Iterator[int]:
    """Yield new token ids; stops at EOS (or ``stop_ids``) or after ``max_new_tokens``."""
    check_generation_options(max_new_tokens, temperature, top_p, top_k, seed)
    ids = model.as_ids(prompt)
    if ids.shape != (1, ids.shape[1]) or ids.shape[1] == 0:
        raise GenerationError("generate needs one non-empty prompt (a query to continue from the state)")
    if stop_ids is None:
        stop_ids = eos_ids(model)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    if max_new_tokens == 0:
        return
    logits, state = model.forward(ids, state, logits="last")
    greedy = None
    with model.decoding(1) as decoder:  # a CUDA-graph decoder on the GPU kernels, else None
        if decoder is not None:
            decoder.load(state)
        for i in range(max_new_tokens):
            if greedy is not None and temperature == 0:
                token = int(greedy[0])  # the argmax the graph already took
            else:
                token = sample(logits[0], temperature, top_p, top_k, generator)
            if token in stop_ids:
                return
            yield token
            if i + 1 < max_new_tokens:
                if decoder is not None:
                    logits, greedy = decoder.step(token)
                else:
                    logits, state = model.step_([token], state)  # forward's state is ours to write over


class StopDecoder:
    """Token ids -> text pieces that end before the first stop string, holding back text that might
    begin one and waiting out incomplete UTF-8 sequences. ``push`` returns (piece, done).

    The text grows incrementally: each token decodes a window from the last clean text boundary
    (where no UTF-8 sequence was left open), not the whole answer again, so a long answer costs the
    same per token as a short one (decoding all 1,000 tokens of an answer again on every token cost
    85 us a token on average with the GPT-NeoX tokenizer). ``incremental=False`` is the reference,
    which decodes everything every time; tokenizers that clean up spaces across tokens always take it."""

    def __init__(self, model, stop, incremental: bool | None = None) -> None:
        self.model = model
        self.stop = [s for s in stop if s]
        self.hold = max((len(s) for s in self.stop), default=1) - 1
        self.tokens: list[int] = []
        self.emitted = ""
        self.text = ""  # the text of tokens[:_read]
        # the window decoded for each token starts one clean step back (_start): tokenizers that drop
        # a leading space at the start of a decode (SentencePiece) then agree with the whole decode
        self._start = self._read = 0
        self._known = ""  # tokens[_start:_read] decoded
        if incremental is None:
            tokenizer = getattr(model, "tokenizer", None)
            incremental = tokenizer is not None and not getattr(tokenizer, "clean_up_tokenization_spaces", False)
        self.incremental = incremental

    def _grow(self) -> bool:
        """Extend ``text`` by the new tokens; False while they end inside a UTF-8 sequence."""
        if not self.incremental:
            text = self.model.decode(self.tokens)
            if text.endswith("\ufffd"):
                return False
            self.text = text
            return True
        window = self.model.decode(self.tokens[self._start:])
        if window.endswith("\ufffd"):
            return False
        if len(window) > len(self._known):
            self.text += window[len(self._known):]
            self._start, self._read = self._read, len(self.tokens)
            self._known = self.model.decode(self.tokens[self._start:self._read])
        return True

    def push(self, token: int) -> tuple[str, bool]:
        self.tokens.append(token)
        if not self._grow():  # an incomplete UTF-8 sequence: wait for the next token
            return "", False
        text = self.text
        # a stop string cannot start in the text already given out (it is held back until it cannot)
        cut = min((i for i in (text.find(s, len(self.emitted)) for s in self.stop) if i >= 0), default=-1)
        if cut >= 0:
            piece = text[len(self.emitted) : cut] if cut > len(self.emitted) else ""
            self.emitted = text[:cut]
            return piece, True
        ready = len(text) - self.hold if self.stop else len(text)
        if ready > len(self.emitted):
            piece, self.emitted = text[len(self.emitted) : ready], text[:ready]
            return piece, False
        return "", False

    def finish(self) -> str:
        """What is left once generation ended without a stop string."""
        text = self.model.decode(self.tokens) if self.tokens else ""
        return text[len(self.emitted) :] if len(text) > len(self.emitted) else ""


def generate_text(model, prompt, state=None, *, stop: list[str] | tuple[str, ...] = (), **options) -> Iterator[str]:
    """Yield text pieces of the continuation; ends before the first ``stop`` string."""
    decoder = StopDecoder(model, stop)
    for token in generate_ids(model, prompt, state, **options):
        piece, done = decoder.push(token)
        if piece:
            yield piece
        if done:
            return
    tail = decoder.finish()
    if tail:
        yield tail
