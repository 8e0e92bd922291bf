"""Serve fixtures: the shipped demo model with six demo skills (real answers that differ per skill),
the tiny random model (its answers never stop early: long requests), and servers on 127.0.0.1 that
the tests start in a thread and talk to with the official openai client."""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "routing"))  # synthetic

DEMO_SKILLS = ("acronym", "date-us", "sentiment", "timer-call", "upper-case", "word-count")
QUERIES = {  # query -> the skill the demo registry routes it to
    "US date for 2023-11-05": "date-us",
    "sentiment: the pasta was lovely": "sentiment",
    "upper case: hello world": "upper-case",
    "set a timer for 5 minutes": "timer-call",
}
API_KEY = "test-key-0123456789"


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    yield


@pytest.fixture(scope="session")
def demo_model():
    from skillsoup import load_model
    from skillsoup.demo import DEMO_MODEL_DIR

    return load_model(DEMO_MODEL_DIR)


@pytest.fixture(scope="session")
def demo_registry_template(tmp_path_factory, demo_model):
    """A registry of six demo skills for the demo model (hashing embedder: fast, offline)."""
    import torch

    from skillsoup import load_skills
    from skillsoup.registry import SkillRegistry

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("demo-registry") / "reg"
    skills = [s for s in load_skills([ROOT / "skills" / "demo"]) if s.name in DEMO_SKILLS]
    with SkillRegistry.open(path, embedder="hash:256") as reg:
        reg.add(skills, demo_model)
    torch.set_num_threads(threads)
    return path


@pytest.fixture(scope="session")
def tiny_registry_template(tmp_path_factory, tiny_model):
    from synthetic import make_skills

    from skillsoup.registry import SkillRegistry

    path = tmp_path_factory.mktemp("tiny-registry") / "reg"
    with SkillRegistry.open(path, embedder="hash:256") as reg:
        reg.add(make_skills(), tiny_model)
    return path


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


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory, demo_registry_template, demo_model):
    served = serve_soup(copy_registry(demo_registry_template, tmp_path_factory.mktemp("demo") / "reg"), demo_model)
    yield served
    stop(served)
