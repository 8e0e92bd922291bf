"""Serve fixtures: the shipped demo model with six demo skills (real answers that differ per skill),
the tiny random model (its answers never stop early: long requests), and servers on 127.0.0.1 that
the tests start in a thread and talk to with the official openai client."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "routing"))  # synthetic
sys.path.insert(0, str(Path(__file__).resolve().parent))  # serve_helpers

from serve_helpers import DEMO_SKILLS, copy_registry, serve_soup, stop  # noqa: E402


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


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory, demo_registry_template, demo_model):
    served = serve_soup(copy_registry(demo_registry_template, tmp_path_factory.mktemp("demo") / "reg"), demo_model)
    yield served
    stop(served)
