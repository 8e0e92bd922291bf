"""What the serve tests share (import with ``from serve_helpers import ...``; tests/serve/conftest.py
puts this folder on sys.path): the demo skills and queries, the API key, and servers in a thread."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

DEMO_SKILLS = ("acronym", "date-us", "sentiment", "timer-call", "upper-case", "word-count")
QUERIES = {  # query -> the skill the demo registry routes it to
    "US date for 2023-11-05": "date-us",
    "sentiment: the pasta was lovely": "sentiment",
    "upper case: hello world": "upper-case",
    "set a timer for 5 minutes": "timer-call",
}
API_KEY = "test-key-0123456789"


def copy_registry(template: Path, dest: Path) -> Path:
    shutil.copytree(template, dest)
    return dest


class Served:
    """A server in a thread with its backend and soup, and clients for it."""

    def __init__(self, soup, app, backend, thread):
        self.soup, self.app, self.backend, self.thread = soup, app, backend, thread
        self.url = thread.url

    def client(self, api_key: str = "unused", **kw):
        import openai

        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=60, **kw)

    def metric(self, name: str) -> float:
        """One sample of /metrics (summed over label sets)."""
        import httpx

        text = httpx.get(self.url + "/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and (line[len(name)] in " {"))

    def wait_for(self, predicate, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out waiting for the server"
            time.sleep(0.05)


def slowed_model(folder, seconds_per_step: float = 0.002):
    """Its own copy of the model in ``folder``, whose decode step sleeps first: a long request then
    outlives a time limit or a client's patience however fast the kernels are."""
    import time

    from skillsoup import load_model

    model = load_model(folder)
    fast_step = model.step_

    def slow_step(tokens, state):
        time.sleep(seconds_per_step)
        return fast_step(tokens, state)

    model.step_ = slow_step
    return model


def serve_soup(registry_path: Path, model, **options):
    """Start a LocalBackend server on 127.0.0.1 for ``model`` over a registry folder."""
    from skillsoup import SkillSoup
    from skillsoup.registry import SkillRegistry
    from skillsoup.serve.server import ServeOptions, ServerThread, build_local

    soup = SkillSoup(SkillRegistry.open(registry_path), model, owns_registry=True)
    app, backend = build_local(soup, ServeOptions(**options))
    return Served(soup, app, backend, ServerThread(app).start())


def stop(served: Served) -> None:
    import asyncio

    served.thread.stop()
    asyncio.run(served.backend.close())
    served.soup.close()
