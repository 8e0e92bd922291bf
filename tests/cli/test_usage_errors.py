"""Usage errors through the installed ``skillsoup`` command, as a user meets them: one red line (or
the help) and exit 2, never a traceback; ``--version``; a start that does not import torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from registry_helpers import subprocess_env


def _skillsoup() -> str:
    beside = Path(sys.executable).parent / "skillsoup"  # the venv's console script
    found = str(beside) if beside.is_file() else shutil.which("skillsoup")
    if found is None:
        pytest.fail("the skillsoup command is not installed; run bash scripts/install.sh")
    return found


def run_skillsoup(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = subprocess_env(SKILLSOUP_HOME=tmp_path / "home", COLUMNS=200)
    return subprocess.run([_skillsoup(), *args], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)


@pytest.mark.parametrize("args, message", [
    (["frobnicate"], "error: No such command 'frobnicate'. (see skillsoup --help)"),
    (["ask"], "error: Missing argument 'QUERY'. (see skillsoup ask --help)"),
    (["ask", "hi", "--bogus"], "error: No such option: --bogus (see skillsoup ask --help)"),
    (["ask", "hi", "--max-tokens", "abc"], "error: Invalid value for '--max-tokens' / '-n'"),
    (["skills", "lst"], "error: No such command 'lst'. Did you mean 'list'? (see skillsoup skills --help)"),
    (["ask", "hi", "--router", "psychic"], "error: Invalid value for '--router' / '-r': 'psychic' is not one of text"),
    (["route", "hi", "--top-k", "0"], "error: Invalid value for '--top-k' / '-k': Input should be greater than or equal to 1"),
    (["ask", "hi", "--max-tokens", "0"], "error: Invalid value for '--max-tokens' / '-n': Input should be greater than or equal to 1"),
    (["ask", "hi", "--mix", "blend"], "error: Invalid value for '--mix': 'blend' is not one of mix, top"),
    (["chat", "--kv", "all"], "error: Invalid value for '--kv': 'all' is not one of top, concat"),
    (["ask", "hi", "--dtype", "int8"], "error: Invalid value for '--dtype': 'int8' is not one of float32"),
    (["ask", "hi", "--temperature", "-1"], "error: Invalid value for '--temperature' / '-t'"),
    (["eval", "routing", "x.jsonl", "--latency-sample", "-5"], "error: Invalid value for '--latency-sample'"),
    (["serve", "--prefill", "bogus"], "error: Invalid value for '--prefill': 'bogus' is not one of auto"),
    (["serve", "--port", "99999"], "error: Invalid value for '--port'"),
    (["serve", "--max-batch", "0"], "error: Invalid value for '--max-batch'"),
    (["skills", "list", "--registry"], "error: Option '--registry' requires an argument. (see skillsoup skills list --help)"),
    (["route", "hi", "-e", "a=>b"], "error: Invalid value for '--example' / '-e': the text router does not read examples"),
], ids=["unknown-command", "missing-argument", "unknown-option", "bad-integer", "unknown-subcommand", "bad-router",
        "top-k-0", "max-tokens-0", "bad-mix", "bad-kv", "bad-dtype", "negative-temperature", "negative-latency-sample",
        "bad-prefill", "bad-port", "max-batch-0", "option-without-value", "example-with-text-router"])
def test_usage_errors_are_one_red_line_and_exit_2(args, message, tmp_path):
    r = run_skillsoup(*args, tmp_path=tmp_path)
    assert r.returncode == 2, r
    assert "Traceback" not in r.stdout + r.stderr
    assert r.stderr.startswith(message) and r.stderr.count("\n") == 1, r.stderr
    assert r.stdout == ""


@pytest.mark.parametrize("args, usage", [([], "skillsoup [OPTIONS] COMMAND"), (["skills"], "skillsoup skills [OPTIONS]")],
                         ids=["no-command", "no-subcommand"])
def test_no_subcommand_prints_the_help_and_exits_2(args, usage, tmp_path):
    r = run_skillsoup(*args, tmp_path=tmp_path)
    assert r.returncode == 2, r
    assert "Traceback" not in r.stdout + r.stderr
    assert usage in r.stdout + r.stderr and "Commands" in r.stdout + r.stderr


def test_version(tmp_path):
    from skillsoup import __version__

    r = run_skillsoup("--version", tmp_path=tmp_path)
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout.startswith(f"skillsoup {__version__} (torch ") and "transformers" in r.stdout
    assert "onnxruntime" in r.stdout  # the query encoder's runtime decides route latency
    assert r.stdout.count("\n") == 1


def test_python_dash_m_runs_the_command():
    r = subprocess.run([sys.executable, "-m", "skillsoup", "ask", "hi", "--mix", "blend"], capture_output=True, text=True,
                       timeout=120, env=subprocess_env())
    assert r.returncode == 2 and r.stderr.startswith("error: Invalid value for '--mix'"), r.stderr


def test_the_command_starts_without_importing_torch():
    """Every command module is imported to build the command list, so one heavy import at module
    level makes even --version and usage errors take seconds."""
    code = ("import sys\nfrom skillsoup.cli import main\ncode = main(['--version'])\n"
            "print(code, sorted(m for m in ('torch', 'transformers', 'chromadb') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=subprocess_env())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "0 []"


def test_mixing_choices_match_the_library():
    from skillsoup.cli.common import KV_CHOICES, MIX_CHOICES
    from skillsoup.runtime import KV_MODES, MIX_MODES

    assert set(MIX_CHOICES) == set(MIX_MODES) and set(KV_CHOICES) == set(KV_MODES)


def test_compose_budget_help_matches_the_library_default():
    from skillsoup.cli.compose import BUDGET_HELP
    from skillsoup.compose import DEFAULT_BUDGET

    assert f"(default {DEFAULT_BUDGET})" in BUDGET_HELP


def test_an_exception_with_clicks_interface_is_a_usage_error(capsys):
    """Should typer move its bundled click again, errors are still recognised by their interface."""
    from skillsoup.cli import is_usage_error, show_usage_error

    class MovedUsageError(Exception):
        exit_code = 2

        def format_message(self) -> str:
            return "No such option: --x"

    assert is_usage_error(MovedUsageError()) and not is_usage_error(ValueError("bug"))
    show_usage_error(MovedUsageError())
    assert capsys.readouterr().err == "error: No such option: --x (see skillsoup --help)\n"
