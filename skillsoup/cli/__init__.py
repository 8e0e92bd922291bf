"""The ``skillsoup`` command. Rendering only: it calls the library's public API and turns every
SkillsoupError into one red line and a non-zero exit."""

from __future__ import annotations

import logging
import os
import sys

import typer

from skillsoup.cli.common import console, err_console
from skillsoup.errors import SkillsoupError

app = typer.Typer(
    name="skillsoup",
    help="Route agent skills by retrieving and mixing Mamba states.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

eval_app = typer.Typer(name="eval", help="Measure how well skills are routed and used.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what the library does.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _register() -> None:
    """Each command module adds its commands to ``app``."""
    from skillsoup.cli import (
        chat,  # noqa: F401
        compose,  # noqa: F401
        demo,  # noqa: F401
        eval_icl,  # noqa: F401
        routing,  # noqa: F401
        serve,  # noqa: F401
        skills,  # noqa: F401
    )


def main(argv: list[str] | None = None) -> int:
    # local folders and the packaged embedder load with local_files_only; only a hub id given by the
    # user reaches the network
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _register()
    try:
        result = app(args=argv, standalone_mode=False)  # returns a command's typer.Exit code
    except SkillsoupError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("[red]aborted[/]")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except Exception as exc:  # click usage errors and friends
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return exc.exit_code
        raise
    return result if isinstance(result, int) else 0


def run() -> None:  # console-script entry point
    sys.exit(main())


__all__ = ["app", "console", "main", "run"]
