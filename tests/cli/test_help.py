"""Every command's --help reads like a usual command line (skillsoup/cli/help.py): QUERY, TEXT,
INTEGER, PATH or a named metavar, nothing after a flag; never typer 0.29's ``{query}``, ``<str>``,
``<bool>``, ``<list[str]>`` or ``<int range>``."""

from __future__ import annotations

import re

import pytest
from test_usage_errors import run_skillsoup

TYPE_LABEL = re.compile(r"<[a-z_]+(\[[a-z_|]+\])?( range)?>")  # <str>, <bool>, <list[str]>, <int range>, <path>
BRACED_NAME = re.compile(r"\{[a-z_]+\}")  # {query}, typer's required argument in the usage line


def command_paths() -> list[tuple[str, ...]]:
    """Every group and command of ``skillsoup``, as the words that name it."""
    import typer

    from skillsoup.cli import _register, app

    _register()
    out = []

    def walk(command, path):
        out.append(path)
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    return out


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "skillsoup")
def test_help_has_no_type_placeholders(cli, path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    r = cli(*path, "--help")
    assert r.code == 0, r
    assert "Usage: skillsoup" in r.out
    assert not TYPE_LABEL.search(r.out), TYPE_LABEL.search(r.out)
    assert not BRACED_NAME.search(r.out), BRACED_NAME.search(r.out)
    for line in r.out.splitlines():  # a flag's row: its name, then its help, no placeholder between
        if "--help" in line:
            assert re.search(r"--help\s+Show this message", line), line


def test_route_help_through_the_installed_command(tmp_path):
    r = run_skillsoup("route", "--help", tmp_path=tmp_path)
    assert r.returncode == 0, r.stderr
    usage = next(line for line in r.stdout.splitlines() if "Usage:" in line)
    assert usage.split() == ["Usage:", "skillsoup", "route", "[OPTIONS]", "QUERY"]
    rows = {line.split()[1]: line for line in r.stdout.splitlines() if line.startswith("│ --")}
    assert re.search(r"--json\s+Print one JSON", rows["--json"])  # a flag: no placeholder
    assert re.search(r"-k\s+N \[x>=1\]\s+At most", rows["--top-k"])
    assert re.search(r"-e\s+INPUT=>OUTPUT\s+An INPUT", rows["--example"])
    assert re.search(r"--registry\s+DIR\s+Registry folder", rows["--registry"])
    assert re.search(r"-r\s+TEXT\s+text, state", rows["--router"])


def test_argument_names_in_capitals(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    usage = {" ".join(p): next(line for line in cli(*p, "--help").out.splitlines() if "Usage:" in line).split()
             for p in (("add",), ("fit",), ("skills", "rebuild"), ("eval", "icl"))}
    assert usage["add"][-1] == "PATHS..."  # required, repeatable
    assert usage["fit"][-1] == "[FILE]"  # optional
    assert usage["skills rebuild"][-1] == "[NAMES]..."
    assert usage["eval icl"][-1] == "SKILL_FILES..."
    missing = cli("ask")
    assert missing.code == 2 and missing.err.startswith("error: Missing argument 'QUERY'.")


def test_the_commands_are_listed_in_the_order_a_user_meets_them(tmp_path):
    from skillsoup.cli import _Commands

    top = {p[0] for p in command_paths() if len(p) == 1}
    assert set(_Commands.order) == top  # a new command gets its place in the list deliberately
    r = run_skillsoup("--help", tmp_path=tmp_path)
    listed = re.findall(r"^│ (\w+) ", r.stdout, flags=re.M)
    assert listed == list(_Commands.order), r.stdout
