"""``skillsoup chat`` in-process with scripted (non-terminal) input: options are checked before
the model loads, lines are read with input(), an empty registry gets the bundled skills with
--yes and a hint without it, and end of input leaves cleanly."""

from __future__ import annotations

import io

import pytest

import skillsoup.chat.session as chat_module
from skillsoup.cli import main


@pytest.fixture
def run_chat(monkeypatch, capsys, mamba_dir):
    def run(*args, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        capsys.readouterr()
        code = main(["chat", "--model", str(mamba_dir), *map(str, args)])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


@pytest.mark.parametrize("args, message", [
    (["--router", "psychic"], "unknown router 'psychic'"),
    (["--mix", "soup"], "'soup' is not one of mix, top"),
    (["--max-tokens", "0"], "max tokens must be an integer from 1 to 4096"),
    (["--temperature", "-1"], "'--temperature' / '-t': Input should be greater than or equal to 0"),
])
def test_bad_options_are_one_red_line(run_chat, args, message, tmp_path):
    code, out, err = run_chat("--registry", tmp_path / "reg", *args)
    assert code == 2 and message in err and "skillsoup chat --help" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "reg").exists()  # checked before anything is opened


def test_scripted_lines_are_read_until_quit(run_chat, registry_dir):
    code, out, err = run_chat("--registry", registry_dir, stdin="/skills\n/use timr\n/quit\nnever read\n")
    assert code == 0
    assert "· 2 skills · text router" in out and "upper-case a word" in out
    assert "unknown skill 'timr'; close: timer" in out


def test_end_of_input_leaves(run_chat, registry_dir):
    code, out, err = run_chat("--registry", registry_dir, stdin="/mix top\n")
    assert code == 0 and "mix top" in out


def test_empty_registry_gets_the_bundled_skills_with_yes(run_chat, tmp_path, monkeypatch):
    folder = tmp_path / "bundled"
    folder.mkdir()
    (folder / "echo.yaml").write_text("name: echo\ndescription: repeat\ndemonstrations:\n  - {input: a, output: a}\n",
                                      encoding="utf-8")
    monkeypatch.setattr(chat_module, "bundled_skills_dir", lambda: folder)
    code, out, err = run_chat("--registry", tmp_path / "a", stdin="/quit\n")
    assert code == 0 and f"no skills yet: answers use none; add some with /add {folder}" in out
    assert "· 0 skills ·" in out
    code, out, err = run_chat("--registry", tmp_path / "b", "--yes", stdin="/skills\n/quit\n")
    assert code == 0 and "1 added (echo)" in out and "· 1 skill ·" in out and "repeat" in out
