"""Shared fixtures: tiny random Mamba / Mamba-2 checkpoints saved to a temp folder and loaded back
through the real loading code, and a user directory that never touches the real one."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for `from helpers import ...`

from helpers import build_checkpoint  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
# encoder exports (skillsoup/embedding/onnx_export.py) go to one folder per test session, shared with the
# CLI and server processes the tests start, never to the user's cache
os.environ.setdefault("SKILLSOUP_ENCODER_CACHE", tempfile.mkdtemp(prefix="skillsoup-encoders-"))


@pytest.fixture(scope="session")
def mamba_dir(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("mamba1"), "mamba")


@pytest.fixture(scope="session")
def mamba2_dir(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("mamba2"), "mamba2")


@pytest.fixture(scope="session")
def tiny_model(mamba_dir):
    """The tiny Mamba-1 checkpoint, loaded once."""
    from skillsoup import load_model

    return load_model(mamba_dir)


@pytest.fixture(scope="session")
def hybrid_dir(tmp_path_factory):
    """A tiny random Jamba (Mamba-1 mixers, attention, MoE) with a tokenizer: the hybrid the
    registry, runtime, compose, eval and CLI tests run on."""
    from hybrid_configs import build_hybrid

    return build_hybrid(tmp_path_factory.mktemp("jamba"), "jamba")


@pytest.fixture(scope="session")
def hybrid_model(hybrid_dir):
    from skillsoup import load_model

    return load_model(hybrid_dir)


@pytest.fixture
def one_torch_thread():
    """Tiny ops on a shared 2-core machine crawl with two contending threads; folders whose tests
    run many of them use this from an autouse fixture."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", params=["mamba", "mamba2"])
def model(request, mamba_dir, mamba2_dir):
    from skillsoup import load_model

    return load_model(mamba_dir if request.param == "mamba" else mamba2_dir)


@pytest.fixture(autouse=True)
def _user_dirs(tmp_path, monkeypatch):
    """Point every user directory at a temp folder."""
    monkeypatch.setenv("SKILLSOUP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SKILLSOUP_DATA_DIR", str(tmp_path / "data"))
