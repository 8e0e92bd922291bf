"""Routing fixtures: one torch thread, the tiny model, and registries of the synthetic skills with a
fast hashing embedder (built once, copied per test)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # synthetic
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))  # registry_helpers

EMBEDDER = "hash:256"


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    yield


@pytest.fixture(scope="session")
def _synthetic_template(tmp_path_factory, tiny_model):
    from synthetic import make_skills

    from skillsoup.registry import SkillRegistry

    path = tmp_path_factory.mktemp("synthetic") / "reg"
    with SkillRegistry.open(path, embedder=EMBEDDER) as reg:
        reg.add(make_skills(), tiny_model)
    return path


@pytest.fixture
def syn_registry(_synthetic_template, tmp_path):
    """A registry of the synthetic skills (states for ``tiny_model``), this test's own copy."""
    from skillsoup.registry import SkillRegistry

    path = tmp_path / "reg"
    shutil.copytree(_synthetic_template, path)
    reg = SkillRegistry.open(path)
    yield reg
    reg.close()
