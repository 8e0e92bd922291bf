"""CLI fixtures: run ``skillsoup.cli.main`` in-process and capture what it printed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))  # registry_helpers


@pytest.fixture(autouse=True)
def _fast_defaults(monkeypatch, tmp_path):
    """One torch thread (tiny ops crawl with two contending threads on 2 cores), the hashing
    embedder for speed, and no default model unless a test sets one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("SKILLSOUP_EMBEDDER", "hash:32")
    monkeypatch.delenv("SKILLSOUP_MODEL", raising=False)
    monkeypatch.setattr("skillsoup.config.demo_model_dir", lambda: tmp_path / "no-demo-model")
    yield
    torch.set_num_threads(before)


class Run:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Run(code={self.code}, out={self.out!r}, err={self.err!r})"


@pytest.fixture
def cli(capsys):
    from skillsoup.cli import main

    def run(*args) -> Run:
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return Run(code, out, err)

    return run
