"""Registry fixtures: one thread for torch, a tiny model, registries with a fast hashing embedder."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    yield


@pytest.fixture
def open_registry(tmp_path):
    """Open registries under tmp_path with the hashing embedder; all closed at the end."""
    from skillsoup.registry import SkillRegistry

    opened = []

    def _open(path=None, **kw):
        kw.setdefault("embedder", "hash:32")
        reg = SkillRegistry.open(path or tmp_path / "reg", **kw)
        opened.append(reg)
        return reg

    yield _open
    for reg in opened:
        reg.close()


@pytest.fixture(scope="session")
def second_dir(tmp_path_factory):
    """Same shapes as mamba_dir, other weights: another fingerprint."""
    from registry_helpers import build_checkpoint

    return build_checkpoint(tmp_path_factory.mktemp("mamba1-seed1"), "mamba", seed=1)


@pytest.fixture(scope="session")
def second_model(second_dir):
    from skillsoup import load_model

    return load_model(second_dir)
