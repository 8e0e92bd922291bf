"""Options and consoles shared by the commands."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # an error stays one line

RegistryOpt = Annotated[
    Optional[Path],
    typer.Option("--registry", help="Registry folder (default: $SKILLSOUP_HOME/registry or the user data folder)."),
]
ChromaUrlOpt = Annotated[
    Optional[str],
    typer.Option("--chroma-url", help="Use a Chroma server (http://HOST:PORT) instead of the embedded index."),
]
ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="Model checkpoint folder or hub id (default: $SKILLSOUP_MODEL or the demo model)."),
]


def quiet_libraries() -> None:
    """Keep transformers' and sentence-transformers' progress bars and advice out of the output,
    unless --verbose asked to see what the libraries do."""
    if logging.getLogger("skillsoup").isEnabledFor(logging.INFO):
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", module=r"(transformers|sentence_transformers)(\..*)?$")
    if "transformers" in sys.modules:  # imported before the variables were set: tell it directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()


def open_registry(registry: Optional[Path], chroma_url: Optional[str]):
    from skillsoup.registry import SkillRegistry

    quiet_libraries()
    return SkillRegistry.open(registry, chroma_url=chroma_url)


def load_cli_model(model: Optional[str]):
    """--model, else the configured default (a clear error when there is none)."""
    from skillsoup import config, load_model

    quiet_libraries()
    return load_model(model or config.default_model())
