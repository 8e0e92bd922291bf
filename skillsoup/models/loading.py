"""load_model: a Hugging Face checkpoint of a supported recurrent or hybrid model (local folder or hub
id) -> StateModel. The supported model types, their transformers classes and backends are the table
in :mod:`skillsoup.models.architectures`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from skillsoup.errors import ModelLoadError
from skillsoup.models.architectures import ARCHITECTURES
from skillsoup.models.base import StateModel
from skillsoup.models.hub import config_error, hub_local_only, quiet_loading

log = logging.getLogger(__name__)

SUPPORTED = {t: a.hf_class for t, a in ARCHITECTURES.items()}  # model type -> transformers class
# config entries that do not change what a state means
_VOLATILE_CONFIG = {
    "transformers_version", "dtype", "torch_dtype", "_name_or_path", "use_cache", "output_hidden_states",
    "return_dict", "architectures", "use_mambapy", "use_associative_scan", "_attn_implementation_autoset",
}
_SAMPLES_PER_TENSOR = 4096


def model_fingerprint(hf_model) -> str:
    """Architecture + config + a sample of every weight: cheap (one strided read per tensor) and
    different for any retrained or differently shaped model."""
    h = hashlib.sha256()
    config = {k: v for k, v in hf_model.config.to_dict().items() if k not in _VOLATILE_CONFIG}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, tensor in sorted(hf_model.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        stride = max(1, flat.numel() // _SAMPLES_PER_TENSOR)
        sample = flat[::stride][:_SAMPLES_PER_TENSOR].to(device="cpu", dtype=torch.float32)
        h.update(f"{name}:{tuple(tensor.shape)}:".encode())
        h.update(sample.numpy().tobytes())
        h.update(str(_checksum(flat)).encode())
    return h.hexdigest()


_INT_OF_SIZE = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def _checksum(flat: torch.Tensor) -> int:
    """Sum of every weight's raw bits as integers: one read per tensor like a float sum, but
    integer addition does not depend on the reduction order, which changes with the thread count."""
    return int(flat.contiguous().view(_INT_OF_SIZE[flat.element_size()]).sum(dtype=torch.int64))


def _resolve(name_or_path: str | os.PathLike) -> tuple[str, bool]:
    """-> (what to pass to from_pretrained, whether to read local files only: a folder, or a hub id
    that is cached while the hub is out of reach)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} has no config.json; point --model at a saved Hugging Face checkpoint folder")
        return str(path), True
    text = str(name_or_path)
    if path.exists():
        raise ModelLoadError(f"{path} is a file; --model needs a checkpoint folder or a hub id")
    if text.startswith((".", "/", "~")) or text.count("/") != 1:
        raise ModelLoadError(
            f"model folder {text} does not exist; pass an existing checkpoint folder or a hub id like "
            "state-spaces/mamba-130m-hf"
        )
    return text, hub_local_only(text)


def _load_tokenizer(source: str, local: bool):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=local)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if local and (Path(source) / "tokenizer.json").is_file():
            return PreTrainedTokenizerFast(tokenizer_file=str(Path(source) / "tokenizer.json"))
        log.warning("no tokenizer for %s (%s); text input needs one", source, exc)
        return None


def load_model(
    name_or_path: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    impl: str = "auto",
) -> StateModel:
    """Load a checkpoint of a supported architecture (``SUPPORTED``) and its tokenizer.

    ``name_or_path`` is a local folder (``save_pretrained`` layout) or a hub id, which needs network
    the first time. Every weight must be present with its expected shape.
    """
    import transformers
    from transformers import AutoConfig

    source, local = _resolve(name_or_path)
    folder = Path(source).is_dir()
    try:
        with quiet_loading():
            config = AutoConfig.from_pretrained(source, local_files_only=local)
    except (OSError, ValueError) as exc:
        raise config_error(source, folder, exc) from None
    if config.model_type not in SUPPORTED:
        raise ModelLoadError(
            f"model {source!r} is a {config.model_type!r} model; skillsoup supports {', '.join(sorted(SUPPORTED))}"
        )
    cls = getattr(transformers, SUPPORTED[config.model_type])
    try:
        with quiet_loading():
            hf, info = cls.from_pretrained(source, dtype=dtype, local_files_only=local, output_loading_info=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"cannot load the weights of {source!r}: {exc}") from None
    missing = [k for k in info.get("missing_keys", []) if "lm_head" not in k or not config.tie_word_embeddings]
    bad = missing + list(info.get("mismatched_keys", []))
    if bad:
        raise ModelLoadError(f"checkpoint {source!r} lacks or mis-shapes {len(bad)} weights, e.g. {bad[:3]}")
    hf = hf.to(device)
    with quiet_loading():
        tokenizer = _load_tokenizer(source, local)
    model = StateModel(hf, tokenizer, fingerprint=model_fingerprint(hf), source=source, impl=impl)
    log.info("loaded %r", model)
    return model
