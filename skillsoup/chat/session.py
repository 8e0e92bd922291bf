"""The engine of ``skillsoup chat``: one line in, output on a rich Console.

    session = ChatSession(soup, console)      # a SkillSoup and the Console to render on
    session.first_start(confirm)              # an empty registry: offer the bundled skills
    while session.handle(read_line()): pass   # False once the user quits

A line is a request (answered by streaming, then one dim line naming the skills used, their weights and the
timings) or a slash command (``COMMANDS``). Odd input gets a short note, every SkillsoupError one red line, and
Ctrl-C during an answer stops that answer only. The module renders only through the Console it is given (the
CLI passes its own, tests a StringIO one); reading lines, history and the terminal belong to ``cli.chat``.
"""

from __future__ import annotations

import difflib
import logging
import math
import shlex
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from skillsoup.chat.options import ChatOptions
from skillsoup.chat.transcript import Turn, answer_line, cut_mark, route_table, transcript_markdown
from skillsoup.errors import MixError, SkillsoupError
from skillsoup.models.generation import MAX_NEW_TOKENS
from skillsoup.routing.router import MAX_QUERY_CHARS, ROUTERS
from skillsoup.runtime import KV_MODES, MIX_MODES, Answer, SkillSoup
from skillsoup.skills.loader import bundled_skills_dir, load_skills
from skillsoup.states.mixing import parse_layers, parse_policies

log = logging.getLogger(__name__)

ProgressFactory = Callable[[str], AbstractContextManager]  # title -> yields a (done, total, name) callback or None

COMMANDS: dict[str, tuple[str, str]] = {
    "/help": ("", "this list"),
    "/skills": ("", "the skills in the registry"),
    "/route": ("QUERY", "which skills QUERY goes to, with scores and weights (nothing is generated)"),
    "/use": ("NAME[:WEIGHT] ...", "pin skills for the next answers instead of routing"),
    "/auto": ("", "route each request again (undoes /use)"),
    "/mix": ("[conv=]MODE [kv=KV]", f"mixing: conv states {'|'.join(MIX_MODES)}, hybrids' KV {'|'.join(KV_MODES)}"),
    "/layers": ("RANGE", "which layers are mixed, e.g. 0-1 (the others come from the top skill), or all"),
    "/router": ("KIND", f"how requests are routed: {', '.join(ROUTERS)}"),
    "/temperature": ("X", "sampling temperature, 0 = greedy"),
    "/max-tokens": ("N", f"most new tokens per answer (1 to {MAX_NEW_TOKENS})"),
    "/add": ("PATH ... [--replace]", "add skill files or folders of them"),
    "/reset": ("", "starting settings, routing on, empty transcript"),
    "/save": ("FILE", "write the transcript as Markdown"),
    "/quit": ("", "leave (Ctrl-D works too)"),
}
ALIASES = {"/exit": "/quit", "/q": "/quit", "/?": "/help", "/h": "/help"}


@dataclass
class ChatSession:
    soup: SkillSoup
    console: Console
    options: ChatOptions = field(default_factory=ChatOptions)
    progress: ProgressFactory | None = None  # default: a rich bar on the console when it is a terminal
    transcript: list[Turn] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._start = self.options

    @property
    def prompt(self) -> str:
        pins = "+".join(n for n, _ in self.options.pins)
        return f"chat[{pins}]> " if pins else "chat> "

    # ---- one line ------------------------------------------------------------------------------
    def handle(self, line: str) -> bool:
        """Answer or run one line; False once the session should end. Ctrl-C stops the line."""
        problem = check_line(line)
        if problem:
            self._note(problem)
            return True
        line = line.replace("\t", " ").strip()
        try:
            if line.startswith("/") and not line.startswith("//"):
                return self.command(line)
            self.ask(line[1:] if line.startswith("//") else line)
        except KeyboardInterrupt:
            self.console.print("[stopped]", style="yellow", markup=False)
        except SkillsoupError as exc:
            self._error(exc)
        except Exception as exc:  # a REPL outlives a bug: one red line, the traceback in the log (-v)
            log.info("unexpected error in chat", exc_info=True)
            self.console.print(f"[bold red]unexpected error:[/] {escape(type(exc).__name__)}: {escape(str(exc))} "
                               "(rerun with -v for details)", soft_wrap=True)
        return True

    def ask(self, query: str) -> Answer:
        """Stream the answer to ``query`` onto the console; Ctrl-C while it is written stops it."""
        o = self.options
        stream = self.soup.stream(query, skills=dict(o.pins) or None, mix=o.mix, kv=o.kv, router=o.router,
                                  layers=o.layers, max_new_tokens=o.max_new_tokens, temperature=o.temperature)
        stopped = False
        try:
            for piece in stream:
                self.console.print(piece, end="", markup=False, highlight=False, soft_wrap=True)
        except KeyboardInterrupt:
            stream.close()
            stopped = True
        answer = stream.answer
        if answer.truncated:  # on the answer's line, so it is not taken for part of the next one
            self.console.print(f" {cut_mark(o.max_new_tokens)}", style="yellow", markup=False, soft_wrap=True)
        elif answer.text:
            self.console.print()
        elif not stopped:
            self.console.print("(empty answer)", style="dim")
        if stopped:
            self.console.print("[stopped]", style="yellow", markup=False)
        info = answer_line(answer)
        self.console.print(info, style="dim", markup=False, soft_wrap=True)
        router = "pinned" if answer.pinned else f"{o.router} router"
        self.transcript.append(Turn(query, answer.text, info, stopped, answer.truncated and o.max_new_tokens, router))
        return answer

    def command(self, line: str) -> bool:
        name, _, rest = line.partition(" ")
        name = ALIASES.get(name.lower(), name.lower())
        if name == "/":
            self._note("type a command after /, e.g. /help")
        elif name not in COMMANDS:
            close = difflib.get_close_matches(name, list(COMMANDS), n=2, cutoff=0.6)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            self._note(f"unknown command {name}; {hint}/help lists them "
                       "(start with // to send a line beginning with /)")
        elif name == "/quit":
            return False
        else:
            getattr(self, "_cmd_" + name[1:].replace("-", "_"))(rest.strip())
        return True

    # ---- first start ---------------------------------------------------------------------------
    def first_start(self, confirm: Callable[[str], bool]) -> None:
        """An empty registry: offer (``confirm(question)``) to add the bundled skills."""
        if self.soup.registry.names():
            return
        folder = bundled_skills_dir()
        if folder is None:
            self._note("the registry is empty and no bundled skills were found; add some with /add PATH")
            return
        if confirm(f"The registry is empty. Add the bundled skills from {folder}?"):
            try:
                self.add([folder])
            except SkillsoupError as exc:  # the chat still starts
                self._error(exc)
        else:
            self._note(f"no skills yet: answers use none; add some with /add {folder}")

    def add(self, paths: list[Path], replace_changed: bool = False) -> None:
        skills = load_skills(paths)
        with (self.progress or self._bar)("adding skills") as callback:
            results = self.soup.registry.add(skills, self.soup.model, replace=replace_changed, progress=callback)
        parts = []
        for status in ("added", "replaced", "unchanged"):
            names = [r.name for r in results if r.status == status]
            if names and status != "unchanged":
                parts.append(f"{len(names)} {status} ({', '.join(names[:8])}{', …' if len(names) > 8 else ''})")
            elif names:
                parts.append(f"{len(names)} {status}")
        self.console.print(", ".join(parts) or "no skills in those files", markup=False, soft_wrap=True)

    # ---- commands ------------------------------------------------------------------------------
    def _cmd_help(self, rest: str) -> None:
        table = Table(box=None, show_header=False, pad_edge=False)
        table.add_column(style="bold")
        table.add_column()
        for name, (args, what) in COMMANDS.items():
            table.add_row(escape(f"{name} {args}".strip()), escape(what))
        self.console.print(table)
        self.console.print("Anything else is a request. Ctrl-C stops an answer, Ctrl-D leaves.", style="dim")

    def _cmd_skills(self, rest: str) -> None:
        infos = self.soup.registry.list()
        if not infos:
            self._note("no skills yet; add some with /add PATH")
            return
        pinned = dict(self.options.pins)
        table = Table(title=f"{len(infos)} skills")
        for col in ("name", "demos", "description"):
            table.add_column(col, justify="right" if col == "demos" else "left")
        for i in infos:
            mark = " (pinned)" if i.name in pinned else ""
            table.add_row(escape(i.name + mark), str(i.n_demos), escape(i.description))
        self.console.print(table)

    def _cmd_route(self, rest: str) -> None:
        if not rest:
            self._note("usage: /route QUERY")
            return
        t0 = time.perf_counter()
        matches = self.soup.route(rest, router=self.options.router)
        ms = (time.perf_counter() - t0) * 1000
        if not matches:
            self.console.print("no skill: the request would be answered without one")
        else:
            self.console.print(route_table(rest, matches))
        pinned = "; pinned skills answer instead (/auto to route)" if self.options.pins else ""
        self.console.print(f"{self.options.router} router, {ms:.0f} ms{pinned}", style="dim", markup=False)

    def _cmd_use(self, rest: str) -> None:
        if not rest:
            now = ", ".join(f"{n}:{w:g}" for n, w in self.options.pins) or "none (routing)"
            self._note(f"usage: /use NAME[:WEIGHT] ...  (pinned now: {now})")
            return
        names = self.soup.registry.names()
        pins: dict[str, float] = {}
        for item in rest.split():
            name, colon, weight = item.partition(":")
            if name not in names:
                close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
                self._note(f"unknown skill {name!r}; " + (f"close: {', '.join(close)}" if close else "see /skills"))
                return
            try:
                w = float(weight) if colon else 1.0
            except ValueError:
                w = math.nan
            if not (math.isfinite(w) and w > 0):
                self._note(f"{item!r}: the weight after ':' must be a number > 0, e.g. {name}:0.5")
                return
            if name in pins:
                self._note(f"{name!r} is given twice; give each skill once")
                return
            pins[name] = w
        self.options = replace(self.options, pins=tuple(pins.items()))
        total = sum(pins.values())
        self.console.print("pinned " + ", ".join(f"{n} {w / total:.2f}" for n, w in pins.items())
                           + " until /auto", markup=False, soft_wrap=True)

    def _cmd_auto(self, rest: str) -> None:
        self.options = replace(self.options, pins=())
        self.console.print(f"routing each request ({self.options.router} router)", markup=False)

    def _cmd_mix(self, rest: str) -> None:
        try:  # a bare /mix shows the policies
            conv, kv = parse_policies(rest, self.options.mix, self.options.kv)
        except MixError as exc:
            return self._note(str(exc))
        self.options = replace(self.options, mix=conv, kv=kv)
        self.console.print(f"mix {conv}, kv {kv}", markup=False)

    def _cmd_layers(self, rest: str) -> None:
        layers = rest.replace(" ", "")
        if layers:  # checked against this model now, not at the next answer
            try:
                parse_layers(layers, self.soup.model.num_layers)
            except SkillsoupError as exc:
                self._note(str(exc))
                return
        self._set("layers", layers, str, "layers to mix (all, or ranges like 0-1,3)")

    def _cmd_router(self, rest: str) -> None:
        self._set("router", rest, str, f"router (one of {', '.join(ROUTERS)})")

    def _cmd_temperature(self, rest: str) -> None:
        self._set("temperature", rest, float, "temperature (a number >= 0, 0 = greedy)")

    def _cmd_max_tokens(self, rest: str) -> None:
        self._set("max_new_tokens", rest, int, f"max tokens (an integer from 1 to {MAX_NEW_TOKENS})")

    def _cmd_add(self, rest: str) -> None:
        words = _split(rest)
        if words is None:
            self._note("an unmatched quote in the paths; quote each path once")
            return
        flag = "--replace" in words
        paths = [Path(w).expanduser() for w in words if w != "--replace"]
        if not paths:
            self._note("usage: /add PATH ... [--replace]  (skill files or folders of them)")
            return
        self.add(paths, replace_changed=flag)

    def _cmd_reset(self, rest: str) -> None:
        o = self.options = self._start
        self.transcript.clear()
        self.console.print(f"reset: {'pinned skills' if o.pins else 'routing'} ({o.router} router), mix {o.mix} kv "
                           f"{o.kv} (layers {o.layers}), temperature {o.temperature:g}, max tokens {o.max_new_tokens}; "
                           "transcript cleared",
                           markup=False, soft_wrap=True)

    def _cmd_save(self, rest: str) -> None:
        words = _split(rest)
        if not words or len(words) != 1:
            self._note("usage: /save FILE  (quote a path with spaces)")
            return
        path = Path(words[0]).expanduser()
        try:
            path.write_text(transcript_markdown(self.transcript, self.soup, self.options), encoding="utf-8")
        except OSError as exc:
            self._note(f"cannot write {path}: {exc.strerror or exc}; choose another file")
            return
        n = len(self.transcript)
        self.console.print(f"saved {n} turn{'s' * (n != 1)} to {path}", markup=False, soft_wrap=True)

    # ---- helpers -------------------------------------------------------------------------------
    def _set(self, key: str, rest: str, kind: type, what: str) -> None:
        if not rest:
            self._note(f"{what}: now {getattr(self.options, key)}")
            return
        try:
            value = kind(rest)
            self.options = replace(self.options, **{key: value})
        except (ValueError, SkillsoupError) as exc:
            reason = str(exc) if isinstance(exc, SkillsoupError) else f"{rest!r} is not a {what}"
            self._note(reason)
            return
        self.console.print(f"{key.replace('_new', '').replace('_', ' ')} {value:g}" if kind is not str
                           else f"{key} {value}", markup=False)

    def _error(self, exc: SkillsoupError) -> None:
        self.console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)

    def _note(self, text: str) -> None:
        self.console.print(text, style="yellow", markup=False, highlight=False, soft_wrap=True)

    @contextmanager
    def _bar(self, title: str) -> Iterator:
        if not self.console.is_terminal:
            yield None
            return
        bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                       TextColumn("{task.fields[skill]}"), console=self.console, transient=True)
        with bar:
            task = bar.add_task(title, total=None, skill="")
            yield lambda done, total, name: bar.update(task, completed=done, total=total, skill=name)


def check_line(line: str) -> str | None:
    """A short note on a line that is not worth answering, else None."""
    if not line.strip():
        return "nothing to do: type a request, or /help"
    if len(line) > MAX_QUERY_CHARS:
        return f"the line has {len(line):,} characters; the limit is {MAX_QUERY_CHARS:,} (shorten it)"
    bad = next((c for c in line if c != "\t" and unicodedata.category(c) in ("Cc", "Cs")), None)
    return f"the line holds a control character ({bad!r}); type plain text" if bad is not None else None


def _split(text: str) -> list[str] | None:
    try:
        return shlex.split(text)
    except ValueError:
        return None
