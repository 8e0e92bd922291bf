"""Compose fixtures: one torch thread, the demo model, the ``skillsoup`` command run in-process."""

from __future__ import annotations

import pytest

from skillsoup.demo import DEMO_MODEL_DIR


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="session")
def demo_model():
    from skillsoup import load_model

    return load_model(DEMO_MODEL_DIR)


@pytest.fixture
def cli(monkeypatch):
    """main() (where errors become one red line) run inside typer's CliRunner isolation."""
    from typer.testing import CliRunner

    from skillsoup.cli import main

    monkeypatch.setenv("SKILLSOUP_EMBEDDER", "hash:32")

    def run(*args):
        with CliRunner().isolation() as (stdout, stderr, _):
            code = main([str(x) for x in args])
            out, err = stdout.getvalue().decode(), stderr.getvalue().decode()
        assert "Traceback" not in out + err
        return code, out, err

    return run
