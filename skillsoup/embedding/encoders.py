"""Two encoders for a sentence-transformers folder whose pipeline is Transformer -> mean pooling
[-> Normalize] (all-MiniLM-L6-v2 and most sentence encoders), with the same ``encode`` signature:

- :class:`MeanPooledEncoder`, the reference: the transformer run by torch through transformers.
- :class:`OnnxEncoder`, the fast path on CPU: the same network exported once to ONNX (cached, see
  :mod:`skillsoup.embedding.onnx_export`) and run by ONNX Runtime. One short query takes ~10 ms on a
  core of the project's CPU against ~25 ms for torch, whose per-op cost dominates at ~15 tokens; the
  vectors agree to ~1e-7, so an index built by either serves queries embedded by the other.

Both give what ``SentenceTransformer.encode(normalize_embeddings=True)`` gives (tests compare them),
without importing sentence-transformers, whose import (scikit-learn with it) took 8-15 s of every
CLI call that routes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from skillsoup.embedding import onnx_export
from skillsoup.embedding.onnx_export import OnnxUnavailable

log = logging.getLogger(__name__)
PROBES = ["set a timer for ten minutes", "x", "Ünïcödé çafé — 北京", "convert 3 km to meters please " * 40]
MAX_ERROR = 1e-4  # largest |onnx - reference| accepted per vector component on PROBES (seen: ~1e-7)


class SentenceTokenizer:
    """A folder's tokenizer with its sentence-transformers settings (max_seq_length, do_lower_case)."""

    def __init__(self, folder: Path):
        from transformers import AutoTokenizer

        settings = folder / "sentence_bert_config.json"
        config = json.loads(settings.read_text()) if settings.exists() else {}
        self.max_seq_length = int(config.get("max_seq_length", 512))
        self.lower = bool(config.get("do_lower_case", False))
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)

    def batches(self, texts: list[str], batch_size: int, tensors: str) -> Iterator[dict]:
        """Padded, truncated batches as sentence-transformers' Transformer module makes them."""
        texts = [str(t).strip() for t in texts]
        if self.lower:
            texts = [t.lower() for t in texts]
        for start in range(0, len(texts), batch_size):
            yield self.tokenizer(texts[start : start + batch_size], padding=True, truncation="longest_first",
                                 max_length=self.max_seq_length, return_tensors=tensors)


def mean_pooled_network(net):
    """``net`` (a transformers encoder) -> a module mapping its token inputs to unit mean-pooled rows:
    what the reference computes, as one graph for the exporter."""
    import torch

    class MeanPooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
            hidden = self.net(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    return MeanPooled().eval()


class MeanPooledEncoder:
    """The reference encoder: transformers + torch (see the module docstring)."""

    PIPELINE = ("sentence_transformers.models.Transformer", "sentence_transformers.models.Pooling")

    @classmethod
    def handles(cls, folder: Path) -> bool:
        try:
            pipeline = json.loads((folder / "modules.json").read_text())
            modules = [m["type"] for m in pipeline]
            pooling = json.loads((folder / pipeline[1]["path"] / "config.json").read_text())
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return False
        modes = {k: v for k, v in pooling.items() if k.startswith("pooling_mode")}
        return (tuple(modules[:2]) == cls.PIPELINE and modules[2:] in ([], ["sentence_transformers.models.Normalize"])
                and modes.get("pooling_mode_mean_tokens") is True and sum(bool(v) for v in modes.values()) == 1)

    def __init__(self, folder: Path, device: str = "cpu"):
        from transformers import AutoModel

        self.text = SentenceTokenizer(folder)
        self.net = AutoModel.from_pretrained(folder, local_files_only=True).to(device).eval()
        self.pooled = mean_pooled_network(self.net)
        self.device = device

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.net.config.hidden_size)

    def encode(self, texts: list[str], batch_size: int = 64, **_) -> np.ndarray:
        """[n, dim] unit rows, as SentenceTransformer.encode(normalize_embeddings=True) gives them."""
        import torch

        out = []
        with torch.inference_mode():
            for batch in self.text.batches(texts, batch_size, "pt"):
                out.append(self.pooled(**batch.to(self.device)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.get_sentence_embedding_dimension()), np.float32)


class OnnxEncoder:
    """The fast encoder: :class:`MeanPooledEncoder`'s network run by ONNX Runtime on the CPU.

    ``OnnxEncoder.load(folder, threads)`` exports the folder's network on first use (a few seconds,
    checked against the reference on :data:`PROBES`, padded and one by one; cached by the folder's
    files) and raises :class:`OnnxUnavailable` when it cannot; callers fall back to the reference then."""

    def __init__(self, text: SentenceTokenizer, session):
        self.text, self.session = text, session
        self.inputs = [i.name for i in session.get_inputs()]
        self.dim = int(session.get_outputs()[0].shape[-1])

    @classmethod
    def load(cls, folder: Path, threads: int = 1) -> OnnxEncoder:
        path = onnx_export.cache_path(folder)
        session = onnx_export.cached_session(path, threads)
        if session is None:
            cls.export(folder, path)
            session = onnx_export.make_session(path, threads)
            log.info("embedding model %s: ONNX Runtime, exported to %s", folder, path)
        else:
            log.info("embedding model %s: ONNX Runtime, cached export %s", folder, path)
        return cls(SentenceTokenizer(folder), session)

    @classmethod
    def export(cls, folder: Path, path: Path) -> None:
        """Export ``folder``'s network to ``path``, kept only if it agrees with the reference."""
        reference = MeanPooledEncoder(folder, "cpu")
        with onnx_export.staging(path) as partial:
            onnx_export.export_network(reference.pooled, next(reference.text.batches(PROBES[:2], 2, "pt")), partial)
            fast = cls(reference.text, onnx_export.make_session(partial, 1))
            want = reference.encode(PROBES)
            padded, alone = fast.encode(PROBES), np.concatenate([fast.encode([text]) for text in PROBES])
            error = float(max(np.abs(padded - want).max(), np.abs(alone - want).max()))
            if not error <= MAX_ERROR:
                raise OnnxUnavailable(f"the ONNX export of {folder} differs from the reference by {error:.1e}")

    def get_sentence_embedding_dimension(self) -> int:
        return self.dim

    def encode(self, texts: list[str], batch_size: int = 64, **_) -> np.ndarray:
        """[n, dim] unit rows, as :meth:`MeanPooledEncoder.encode` gives them."""
        out = []
        for batch in self.text.batches(texts, batch_size, "np"):
            feed = {name: np.asarray(batch[name], dtype=np.int64) for name in self.inputs}
            out.append(self.session.run(None, feed)[0].astype(np.float32, copy=False))
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)
