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
    (tmp_path / "reg").mkdir()  # an empty registry: read commands never create one
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
    assert "Input: garden" in quiet.stdout  # the query the answer is to
    verbose = subprocess.run(command[:1] + ["-v"] + command[1:], capture_output=True, text=True, timeout=180, env=env)
    assert verbose.returncode == 0 and "Loading weights" in verbose.stderr and "INFO skillsoup" in verbose.stderr


@pytest.mark.parametrize("args, action", [
    (["fit", "labelled.jsonl"], "store fitted router parameters"),
    (["compose", "blend", "--from", "upper,lower", "--examples", "examples.jsonl", "--model", "MODEL"],
     "add a composite skill"),
    (["add", "files", "--model", "MODEL"], "add skills"),
    (["skills", "remove", "upper"], "remove skill 'upper'"),
], ids=["fit", "compose", "add", "remove"])
def test_writes_to_a_read_only_registry_are_one_line(cli, tmp_path, mamba_dir, monkeypatch, args, action):
    """Read-only as the kernel would report it for a chmod'ed folder (tests may run as root, whom
    chmod does not stop; tests/registry/test_registry_read_only.py runs the real thing)."""
    from registry_helpers import write_skill_yaml

    for name in ("upper", "lower"):
        write_skill_yaml(tmp_path / "files", name)
    reg = ["--registry", tmp_path / "reg"]
    assert cli("add", tmp_path / "files", "--model", mamba_dir, *reg).code == 0
    (tmp_path / "labelled.jsonl").write_text('{"query": "upper input 1", "skill": "upper"}\n', encoding="utf-8")
    (tmp_path / "examples.jsonl").write_text('{"input": "a", "output": "A"}\n{"input": "b", "output": "B"}\n',
                                             encoding="utf-8")
    monkeypatch.setattr("skillsoup.registry.opening.is_read_only", lambda path: True)
    monkeypatch.chdir(tmp_path)
    r = cli(*[str(mamba_dir) if a == "MODEL" else a for a in args], *reg)
    assert r.code == 1, r
    assert r.err.startswith(f"error: registry {tmp_path / 'reg'} is read-only for this process, so it cannot {action}")
    assert r.err.count("\n") == 1
    assert [s["name"] for s in json.loads(cli("skills", "list", "--json", *reg).out)] == ["lower", "upper"]
