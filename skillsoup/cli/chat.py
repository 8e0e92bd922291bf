"""``skillsoup chat``: the terminal around :class:`skillsoup.chat.ChatSession` (reading lines with
editing and history, the first-start question); the session does the rest."""

from __future__ import annotations

import sys
from typing import Annotated, Callable

import typer
from rich.markup import escape

from skillsoup.cli import app
from skillsoup.cli.common import (
    ChromaUrlOpt, DeviceOpt, DtypeOpt, KvOpt, MixOpt, ModelOpt, RegistryOpt, TemperatureOpt, console, load_cli_model,
    open_registry,
)

HISTORY_FILE = "chat_history"


def _interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _line_reader(session) -> Callable[[], str]:
    """prompt_toolkit with history under the user directory on a terminal; plain input() otherwise
    (scripted input). Both raise EOFError at the end and KeyboardInterrupt on Ctrl-C."""
    if not _interactive():
        return lambda: input(session.prompt)
    from prompt_toolkit import PromptSession
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    from skillsoup import config

    try:
        path = config.home() / HISTORY_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
        history = FileHistory(str(path))
    except OSError as exc:
        console.print(f"[dim]history not kept ({escape(str(exc))})[/]")
        history = InMemoryHistory()
    prompt = PromptSession(history=history)
    return lambda: prompt.prompt(session.prompt)


def _confirm(yes: bool) -> Callable[[str], bool]:
    if yes:
        return lambda question: True
    if not _interactive():
        return lambda question: False  # scripted input is for requests, not for this question

    def ask(question: str) -> bool:
        try:
            return typer.confirm(question, default=True)
        except (typer.Abort, EOFError, KeyboardInterrupt):
            return False

    return ask


@app.command()
def chat(
    ctx: typer.Context,
    registry: RegistryOpt = None,
    chroma_url: ChromaUrlOpt = None,
    model: ModelOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Add the bundled skills to an empty registry, unasked.")] = False,
    router: Annotated[str, typer.Option("--router", "-r", help="text, state or hybrid.")] = "text",
    mix: MixOpt = "mix",
    kv: KvOpt = "top",
    max_tokens: Annotated[int, typer.Option("--max-tokens", "-n", help="Most new tokens per answer.")] = 64,
    temperature: TemperatureOpt = 0.0,
    device: DeviceOpt = "cpu",
    dtype: DtypeOpt = "float32",
) -> None:
    """Chat with the model: each request is routed to skills (or uses pinned ones) and answered as
    it is written. /help inside lists the commands."""
    from skillsoup.chat import ChatOptions, ChatSession
    from skillsoup.runtime import SkillSoup

    from skillsoup.errors import SkillsoupError

    try:  # checked first; a bad value is a usage error (exit 2, names chat --help), as for other commands
        options = ChatOptions(router=router, mix=mix, kv=kv, max_new_tokens=max_tokens, temperature=temperature)
    except SkillsoupError as exc:
        raise typer.BadParameter(str(exc), ctx=ctx) from None
    m = load_cli_model(model, device, dtype)
    with open_registry(registry, chroma_url, create=True) as reg:
        session = ChatSession(SkillSoup(reg, m), console, options)
        session.first_start(_confirm(yes))
        n = len(reg.names())
        console.print(f"[bold]skillsoup chat[/] · {escape(m.source or 'model')} · {n} skill{'s' if n != 1 else ''}"
                      f" · {options.router} router · /help for commands, Ctrl-D to leave", soft_wrap=True)
        read = _line_reader(session)
        while True:
            try:
                line = read()
            except KeyboardInterrupt:  # at the prompt: a fresh line, as in Python's REPL
                continue
            except EOFError:
                console.print()
                break
            if not session.handle(line):
                break
