"""What a newcomer sees when a model cannot be loaded, and that loading is quiet: a hub id offline or
with the hub out of reach fails at once with one line (no retries), a cached hub id still loads,
a broken local config.json gets advice about the folder, and no progress bar is printed unless
skillsoup logs at INFO (``skillsoup -v``)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skillsoup import load_model
from skillsoup.errors import ModelLoadError
from skillsoup.models import hub

UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


def _env(tmp_path, **extra) -> dict:
    import os

    env = dict(os.environ, SKILLSOUP_HOME=str(tmp_path / "home"), HF_HUB_CACHE=str(tmp_path / "hf-cache"),
               OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def _cache(tmp_path, checkpoint, repo_id: str = "tiny-org/tiny-mamba") -> str:
    """Put a saved checkpoint in a Hugging Face cache folder the way a download leaves it."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf-cache" / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(checkpoint, repo / "snapshots" / commit)
    return repo_id


def _python(code: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env)


def test_offline_hub_id_fails_at_once_without_touching_the_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "hub_problem", lambda: pytest.fail("offline mode must not probe the hub"))
    with pytest.raises(ModelLoadError) as err:
        load_model("state-spaces/mamba-130m-hf")
    message = str(err.value)
    assert "not in the local Hugging Face cache and HF_HUB_OFFLINE=1" in message
    assert "hf download state-spaces/mamba-130m-hf --local-dir DIR" in message and "\n" not in message


def test_unreachable_hub_is_one_line_without_retries(tmp_path):
    """Before: five retries with growing sleeps, 23 warning lines over about 26 s, then the error."""
    env = _env(tmp_path, HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0", HF_ENDPOINT=UNREACHABLE)
    skillsoup = Path(sys.executable).parent / "skillsoup"  # the installed command
    r = subprocess.run([str(skillsoup), "ask", "hi", "--model", "state-spaces/mamba-130m-hf"], capture_output=True, text=True,
                       timeout=180, env=env, cwd=tmp_path)
    assert r.returncode == 1, r
    assert r.stderr.startswith(f"error: cannot reach the Hugging Face hub ({UNREACHABLE}") and r.stderr.count("\n") == 1
    assert "Retry" not in r.stderr and "Traceback" not in r.stderr and r.stdout == ""


@pytest.mark.slow
@pytest.mark.parametrize("offline", ["1", "0"], ids=["offline", "hub-unreachable"])
def test_a_cached_hub_id_loads_from_the_cache(tmp_path, mamba_dir, offline):
    repo_id = _cache(tmp_path, mamba_dir)
    env = _env(tmp_path, HF_HUB_OFFLINE=offline, TRANSFORMERS_OFFLINE=offline, HF_ENDPOINT=UNREACHABLE)
    r = _python("import logging\nlogging.basicConfig()\nfrom skillsoup import load_model\n"
                f"m = load_model({repo_id!r})\nprint(m.arch, m.source, m.decode(m.encode('ok')))", env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"mamba {repo_id} ok"
    assert "Retry" not in r.stderr and "Loading weights" not in r.stderr
    if offline == "0":
        assert "loading tiny-org/tiny-mamba from the local cache" in r.stderr


@pytest.mark.parametrize("config, reason", [
    ('{"model_type": "mamba", ', "is not a valid JSON file"),
    ('{"hidden_size": 8}', "Unrecognized model"),
], ids=["truncated-json", "no-model-type"])
def test_a_broken_local_config_gets_advice_about_the_folder(tmp_path, config, reason):
    folder = tmp_path / "fakemodel"
    folder.mkdir()
    (folder / "config.json").write_text(config, encoding="utf-8")
    with pytest.raises(ModelLoadError) as err:
        load_model(folder)
    message = str(err.value)
    assert message.startswith(f"model folder {folder}: its config.json cannot be read") and reason in message
    assert f"fix or replace {folder / 'config.json'}" in message
    assert "download" not in message and "\n" not in message


def test_loading_prints_no_progress_bar(mamba_dir, capfd):
    load_model(mamba_dir)
    out, err = capfd.readouterr()
    assert "Loading weights" not in out + err and "it/s" not in err


def test_progress_bars_show_when_skillsoup_logs_at_info(mamba_dir, capfd, monkeypatch):
    """``skillsoup -v`` sets INFO logging: then transformers' own output is part of what was asked for,
    and a quiet load afterwards puts transformers' settings back as it found them."""
    from transformers.utils import logging as hf_logging

    # the CLI's quiet_libraries (run in-process by other tests) turns transformers' bars off for the process
    saved = (hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity())
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    hf_logging.enable_progress_bar()
    hf_logging.set_verbosity_warning()
    try:
        monkeypatch.setattr(logging.getLogger("skillsoup"), "level", logging.INFO)
        load_model(mamba_dir)
        assert "Loading weights" in capfd.readouterr().err

        before = (hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity())
        monkeypatch.setattr(logging.getLogger("skillsoup"), "level", logging.WARNING)
        load_model(mamba_dir)
        assert (hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()) == before
    finally:
        hf_logging.set_verbosity(saved[1])
        (hf_logging.enable_progress_bar if saved[0] else hf_logging.disable_progress_bar)()
