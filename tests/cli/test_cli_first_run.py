"""Rough edges of the commands a newcomer met: an answer cut by --max-tokens says so (on stderr, so
stdout stays the answer), and library progress bars appear only with -v."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from registry_helpers import subprocess_env


def test_ask_says_when_the_token_limit_cut_the_answer(cli, mamba_dir, tmp_path):
    reg = ["--registry", tmp_path / "reg", "--model", mamba_dir, "--no-route"]
    cut = cli("ask", "hello", "--max-tokens", "2", *reg)
    assert cut.code == 0, cut
    assert cut.err.splitlines()[0] == "(cut at 2 tokens; raise --max-tokens for more)"
    assert "cut at" not in cut.out
    as_json = json.loads(cli("ask", "hello", "--max-tokens", "2", "--json", *reg).out)
    assert as_json["truncated"] is True and as_json["timings"]["n_tokens"] == 2


@pytest.mark.slow
def test_library_progress_bars_only_with_verbose(mamba_dir, tmp_path):
    command = [str(Path(sys.executable).parent / "skillsoup"), "demo", "--model", str(mamba_dir)]
    env = subprocess_env(SKILLSOUP_HOME=tmp_path / "home")
    for leaked in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):  # set by in-process CLI tests
        env.pop(leaked, None)
    quiet = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "" and "relative logit difference" in quiet.stdout
    verbose = subprocess.run(command[:1] + ["-v"] + command[1:], capture_output=True, text=True, timeout=180, env=env)
    assert verbose.returncode == 0 and "Loading weights" in verbose.stderr and "INFO skillsoup" in verbose.stderr
