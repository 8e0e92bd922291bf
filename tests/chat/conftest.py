"""Chat fixtures: the tiny model, a two-skill registry with the hashing embedder (built once,
copied per test), a SkillSoup whose router picks one skill, and a session rendering to a string."""

from __future__ import annotations

import io
import shutil

import pytest
from rich.console import Console

from skillsoup.skills.skill import Demonstration, Skill

EMBEDDER = "hash:64"


def chat_skills() -> list[Skill]:
    timer = Skill("timer", "set timers", tuple(
        Demonstration(f"set a timer for {n} minutes", f"timer(minutes={n})") for n in (3, 5, 10, 15, 20)))
    upper = Skill("upper", "upper-case a word", tuple(
        Demonstration(f"shout the word {w}", w.upper()) for w in ("cat", "river", "lamp", "stone")))
    return [timer, upper]


@pytest.fixture(autouse=True)
def _one_torch_thread_hash_embedder(one_torch_thread, monkeypatch):
    monkeypatch.setenv("SKILLSOUP_EMBEDDER", EMBEDDER)


@pytest.fixture(scope="session")
def _registry_template(tmp_path_factory, tiny_model):
    from skillsoup.registry import SkillRegistry

    path = tmp_path_factory.mktemp("chat") / "reg"
    with SkillRegistry.open(path, embedder=EMBEDDER) as reg:
        reg.add(chat_skills(), tiny_model)
    return path


@pytest.fixture
def registry_dir(_registry_template, tmp_path):
    path = tmp_path / "reg"
    shutil.copytree(_registry_template, path)
    return path


@pytest.fixture
def soup(registry_dir, tiny_model):
    from skillsoup.registry import SkillRegistry
    from skillsoup.routing.router import Router, RouterParams
    from skillsoup.runtime import SkillSoup

    reg = SkillRegistry.open(registry_dir)
    s = SkillSoup(reg, tiny_model, router=Router(reg, tiny_model, RouterParams(threshold=0.3, top_k=1)))
    yield s
    reg.close()


class Transcript:
    """A ChatSession on a plain Console writing to a string; ``run(*lines)`` feeds lines and
    returns what they printed."""

    def __init__(self, soup, **options):
        from skillsoup.chat import ChatOptions, ChatSession

        self.buffer = io.StringIO()
        console = Console(file=self.buffer, width=100, color_system=None, force_terminal=False, highlight=False)
        self.progress_calls: list[tuple[int, int, str]] = []
        self.session = ChatSession(soup, console, ChatOptions(**options), progress=self._progress)
        self.alive = True

    def _progress(self, title):
        from contextlib import contextmanager

        @contextmanager
        def bar():
            yield lambda done, total, name: self.progress_calls.append((done, total, name))

        return bar()

    def run(self, *lines: str) -> str:
        start = self.buffer.tell()
        for line in lines:
            self.alive = self.session.handle(line)
        out = self.buffer.getvalue()[start:]
        assert "Traceback" not in out
        return out


@pytest.fixture
def make_chat(soup):
    """``make_chat(other_soup=None, **ChatOptions fields)`` -> a Transcript."""
    return lambda other=None, **options: Transcript(other or soup, **options)


@pytest.fixture
def chat(make_chat):
    return make_chat()


@pytest.fixture
def model_says(monkeypatch, tiny_model):
    """Make the model write ``text`` (token by token) whatever it is asked; returns the calls' options."""
    calls: list[dict] = []

    def say(text: str, then: BaseException | None = None):
        ids = tiny_model.encode(text)

        def generate_ids(prompt_ids, state, **options):
            calls.append(options)
            yield from ids[: options.get("max_new_tokens", len(ids))]
            if then is not None:
                raise then

        monkeypatch.setattr(tiny_model, "generate_ids", generate_ids)
        return calls

    return say
