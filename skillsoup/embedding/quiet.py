"""Quiet model loading: transformers' progress bars and warnings off unless the user asked to see them."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


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
