"""The ``skillsoup`` command. Rendering only: it calls the library's public API and turns every
SkillsoupError into one red line and a non-zero exit."""

from __future__ import annotations

import logging
import os
import sys

import typer
from rich.markup import escape

from skillsoup.cli.common import console, err_console
from skillsoup.cli.help import Group, Typer
from skillsoup.errors import SkillsoupError

class _Commands(Group):
    # --help lists the commands in the order a user meets them (registration follows module imports)
    order = ("chat", "add", "skills", "route", "ask", "fit", "eval", "compose", "serve", "doctor", "demo")


app = Typer(
    _Commands,
    name="skillsoup",
    help="Route agent skills by retrieving and mixing Mamba states.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

eval_app = Typer(name="eval", help="Measure how well skills are routed and used.", no_args_is_help=True)
app.add_typer(eval_app, name="eval")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(version_line())
        raise typer.Exit()


def version_line() -> str:
    """skillsoup's version and the versions that decide its numbers (read from the installed
    metadata, so nothing heavy is imported)."""
    from importlib import metadata

    from skillsoup import __version__

    def installed(name: str) -> str:
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            return f"{name} not installed"

    deps = ", ".join(installed(n) for n in ("torch", "transformers", "chromadb", "onnxruntime"))
    return f"skillsoup {__version__} ({deps}; Python {sys.version.split()[0]})"


@app.callback()
def _root(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what the library does (and show library progress bars)."),
    version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
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
        result = app(args=argv, prog_name="skillsoup", standalone_mode=False)  # returns a command's typer.Exit code
    except SkillsoupError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        return exc.exit_code
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("[red]aborted[/]")
        return 130
    except typer.Exit as exc:
        return exc.exit_code
    except Exception as exc:
        if not is_usage_error(exc):
            raise
        show_usage_error(exc, sys.argv[1:] if argv is None else argv)
        return exc.exit_code
    if result == 130:  # typer returns Ctrl-C during a command as a silent 130 (no command returns it)
        err_console.print("[red]aborted[/]")
    return result if isinstance(result, int) else 0


def _click_exception_types() -> tuple[type, ...]:
    """click's ClickException and, since typer 0.29, the copy of click that typer bundles (its
    parser raises that copy's exceptions, which are not click's)."""
    import importlib

    found = []
    for module in ("click.exceptions", "typer._click.exceptions"):
        try:
            found.append(importlib.import_module(module).ClickException)
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def is_usage_error(exc: BaseException) -> bool:
    """A click-style command-line error: one of the known classes or, should typer move its
    copy of click again, anything with click's interface (an int ``exit_code``, ``format_message``)."""
    if isinstance(exc, _click_exception_types()):
        return True
    return isinstance(getattr(exc, "exit_code", None), int) and callable(getattr(exc, "format_message", None))


def command_path(argv: list[str]) -> str:
    """The command the arguments name ("skillsoup skills list"): the leading words that are commands."""
    command, path = typer.main.get_command(app), ["skillsoup"]
    for word in argv:
        if word.startswith("-"):  # options before the command (-v), or after it
            continue
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            break
        command, path = sub, path + [word]
    return " ".join(path)


def show_usage_error(exc: BaseException, argv: list[str] | None = None) -> None:
    """One red line naming the command and where its help is. No arguments at all is a request for
    the help, which click has already printed while building the error. Errors the parser raises
    before it knows the command (an option missing its value) carry no command: the arguments tell."""
    message = exc.format_message()
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError":
        if message.strip():  # printed by us only when click did not render it itself (plain mode)
            typer.echo(message)
        return
    path = getattr(ctx, "command_path", "") or (command_path(argv) if argv is not None else "skillsoup")
    err_console.print(f"[bold red]error:[/] {escape(message)} [dim](see {escape(path)} --help)[/]", highlight=False)


def run() -> None:  # console-script entry point
    sys.exit(main())


__all__ = ["app", "console", "main", "run"]
