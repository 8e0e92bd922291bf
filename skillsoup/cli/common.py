"""Options and consoles shared by the commands."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)  # an error stays one line


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """'1 skill', '3 skills' ('1 labelled query', '2 labelled queries' with ``plural``)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def one_of(*choices: str):
    """An option callback: a value not among ``choices`` is a usage error (exit 2, names the option
    and its --help), found before anything loads."""

    def check(value):
        if value is not None and value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
        return value

    return check


RegistryOpt = Annotated[
    Optional[Path],
    typer.Option("--registry", metavar="DIR",
                 help="Registry folder (default: $SKILLSOUP_HOME/registry or the user data folder)."),
]
ChromaUrlOpt = Annotated[
    Optional[str],
    typer.Option("--chroma-url", metavar="URL", help="Use a Chroma server (http://HOST:PORT) instead of the embedded index."),
]
ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", "-m", metavar="MODEL",
                 help="Model checkpoint folder or hub id (default: $SKILLSOUP_MODEL or the demo model)."),
]
DeviceOpt = Annotated[
    str,
    typer.Option("--device", help="cpu, cuda or cuda:N. On cuda the Triton kernels run, decoding and short reads "
                                  "as CUDA graphs, skill states kept on the GPU."),
]
MIX_CHOICES = ("mix", "top")  # skillsoup.runtime.MIX_MODES and KV_MODES, without importing torch here
KV_CHOICES = ("top", "concat")
MixOpt = Annotated[str, typer.Option("--mix", callback=one_of(*MIX_CHOICES), help="Conv states of mixed skills: mix or top.")]
KvOpt = Annotated[str, typer.Option("--kv", callback=one_of(*KV_CHOICES),
                                    help="Attention KV of mixed skills (hybrid models): top or concat.")]
TemperatureOpt = Annotated[float, typer.Option("--temperature", "-t", min=0.0, help="0 = greedy.")]
DTYPES = ("float32", "bfloat16", "float16")
DtypeOpt = Annotated[
    str,
    typer.Option("--dtype", callback=one_of(*DTYPES), help="Model weights: float32, bfloat16 or float16 (states stay float32). Skill states "
                                 "belong to one model and dtype: rebuild them after changing it (skills rebuild)."),
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


def require_registry(registry: Optional[Path], chroma_url: Optional[str], other_way: str = "") -> None:
    """A --registry folder that does not exist is a RegistryError (``other_way``: how else this
    command gets one), checked before anything loads."""
    if registry is not None and chroma_url is None and not Path(registry).expanduser().exists():
        from skillsoup.errors import RegistryError

        raise RegistryError(f"registry {registry} does not exist; check --registry (skillsoup add FILES "
                            f"--registry {registry} creates one{other_way})")


def open_registry(registry: Optional[Path], chroma_url: Optional[str], create: bool = False):
    """The registry of --registry / --chroma-url (default: the configured one). A --registry folder
    that does not exist is created only by commands that write (``create``): a mistyped path given to
    route, ask or list is an error, not a new empty registry that answers without skills."""
    from skillsoup.registry import SkillRegistry

    if not create:
        require_registry(registry, chroma_url)
    quiet_libraries()
    return SkillRegistry.open(registry, chroma_url=chroma_url)


def load_cli_model(model: Optional[str], device: str = "cpu", dtype: str = "float32"):
    """--model, else the configured default (a clear error when there is none), on --device in --dtype."""
    import torch

    from skillsoup import config, load_model
    from skillsoup.errors import ModelLoadError

    if dtype not in DTYPES:
        raise ModelLoadError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    try:
        where = torch.device(device)
    except RuntimeError:
        raise ModelLoadError(f"--device must be cpu, cuda or cuda:N, got {device!r}") from None
    if where.type not in ("cpu", "cuda"):
        raise ModelLoadError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if where.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device}: this machine has no CUDA GPU (or torch was built without CUDA); "
                             "use --device cpu")
    if where.type == "cuda" and (where.index or 0) >= torch.cuda.device_count():
        raise ModelLoadError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    quiet_libraries()
    return load_model(model or config.default_model(), device=where, dtype=getattr(torch, dtype))


@contextmanager
def progress_bar(title: str):
    """A rich progress bar on stderr (a terminal only: logs and pipes stay clean); yields a
    ``progress(done, total, label)`` callback, or None where there is no terminal."""
    if not err_console.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.fields[label]}"), console=err_console, transient=True,
    )
    with bar:
        task = bar.add_task(title, total=None, label="")

        def update(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, label=label)

        yield update
