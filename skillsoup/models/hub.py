"""Where a checkpoint comes from, checked before transformers reads it, and loading kept quiet.

A hub id is checked before transformers touches the network: offline (``HF_HUB_OFFLINE=1``) or with
the hub out of reach, a model that is not in the local Hugging Face cache fails at once with one line,
instead of after huggingface_hub's five retries (about 30 s of warnings); a cached one is loaded from
the cache. transformers' progress bars ("Loading weights") and advice stay off while loading unless
skillsoup logs at INFO (``skillsoup -v``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from skillsoup.embedding import quiet_loading
from skillsoup.errors import ModelLoadError

log = logging.getLogger(__name__)

__all__ = ["config_error", "hub_local_only", "hub_problem", "is_cached", "offline_mode", "quiet_loading"]

PROBE_TIMEOUT_S = 3.0  # one request to the hub, no retries
_TRUE = ("1", "true", "yes", "on")


def offline_mode() -> bool:
    """HF_HUB_OFFLINE (or the older TRANSFORMERS_OFFLINE) is set, read now rather than at import."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def is_cached(repo_id: str) -> bool:
    """Whether the local Hugging Face cache holds ``repo_id``'s config.json (its main revision)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception as exc:  # a malformed id or cache folder: let from_pretrained say what is wrong
        log.debug("cache lookup for %s failed: %s", repo_id, exc)
        return False


def hub_problem() -> str | None:
    """Why the hub cannot be reached (one request, ``PROBE_TIMEOUT_S``), or None when it answers.
    Any HTTP answer counts as reachable; proxies from the environment apply as for downloads."""
    import httpx
    from huggingface_hub import constants

    try:
        with httpx.Client(timeout=PROBE_TIMEOUT_S, follow_redirects=False, trust_env=True) as client:
            client.head(constants.ENDPOINT)
    except httpx.HTTPError as exc:
        reason = str(exc).strip() or type(exc).__name__
        return f"{constants.ENDPOINT}: {reason}"
    return None


def download_advice(repo_id: str) -> str:
    return f"download it where online (hf download {repo_id} --local-dir DIR) and pass --model DIR"


def hub_local_only(repo_id: str) -> bool:
    """For a hub id: True to load from the local cache only, False to let transformers download.
    Raises ModelLoadError at once when the model is not cached and the hub is out of reach."""
    cached = is_cached(repo_id)
    if offline_mode():
        if cached:
            return True
        raise ModelLoadError(f"model {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 keeps "
                             f"the hub out of reach; {download_advice(repo_id)}")
    problem = hub_problem()
    if problem is None:
        return False
    if cached:
        log.warning("the Hugging Face hub is out of reach (%s); loading %s from the local cache", problem, repo_id)
        return True
    raise ModelLoadError(f"cannot reach the Hugging Face hub ({problem}) for model {repo_id!r}; "
                         f"{download_advice(repo_id)}, or set HF_HUB_OFFLINE=1 to use cached models only")


def config_error(source: str, local: bool, exc: Exception) -> ModelLoadError:
    """The error for a config.json that transformers could not read: about the folder when it is
    local (the file is there, so downloading is not the fix), about the hub otherwise."""
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if local:
        return ModelLoadError(f"model folder {source}: its config.json cannot be read ({reason}); fix or replace "
                              f"{Path(source) / 'config.json'} (save_pretrained writes it), or pass another --model folder")
    return ModelLoadError(f"cannot load the config of model {source!r} ({reason}); check the id, or {download_advice(source)}")
