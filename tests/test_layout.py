"""The package's shape: one package per stage, imports running one way, no import loops, small modules.

Stages, left to right; a module may import its own stage and those to its left, never to its right:
    base (errors, config, embedding, skillsoup_kernels) < states < models < skills < registry
    < routing < runtime < chat, evals, compose, demo < cli (and __main__, python -m skillsoup), serve
Every import counts: module level, inside functions and under ``if TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "skillsoup"
STAGES = [
    {"skillsoup.errors", "skillsoup.config", "skillsoup.embedding", "skillsoup_kernels"},
    {"skillsoup.states"},
    {"skillsoup.models"},
    {"skillsoup.skills"},
    {"skillsoup.registry"},
    {"skillsoup.routing"},
    {"skillsoup.runtime"},
    {"skillsoup.chat", "skillsoup.evals", "skillsoup.compose", "skillsoup.demo"},
    {"skillsoup.cli", "skillsoup.__main__", "skillsoup.serve"},
]
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def stage_of(name: str) -> int | None:
    for i, group in enumerate(STAGES):
        if any(name == g or name.startswith(g + ".") for g in group):
            return i
    return None


def imports_of(path: Path, known: set[str]) -> set[str]:
    """Every skillsoup module this file imports, anywhere in it (``from pkg import sub`` counts as sub)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in known else node.module)
    return {n for n in found if n == "skillsoup" or n.startswith(("skillsoup.", "skillsoup_kernels"))}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports_of(path, set(mods)) - {name} for name, path in mods.items()}


def test_every_module_has_a_stage():
    assert [n for n in modules() if n != "skillsoup" and stage_of(n) is None] == []


def test_imports_run_one_way_between_stages():
    wrong = []
    for name, deps in graph().items():
        if name == "skillsoup":  # the top-level package re-exports the public API, lazily
            continue
        for dep in deps:
            if dep == "skillsoup" and stage_of(name) < len(STAGES) - 1:
                wrong.append(f"{name} imports the top-level package (only cli and serve may)")
            elif dep != "skillsoup" and stage_of(dep) > stage_of(name):
                wrong.append(f"{name} (stage {stage_of(name)}) imports {dep} (stage {stage_of(dep)})")
    assert wrong == []


def test_no_two_modules_import_each_other_in_a_loop():
    g = {n: {d for d in deps if d in g_names} for g_names in [set(modules())] for n, deps in graph().items()}
    # a package's __init__ re-exports its modules: count only module -> module edges
    g = {n: {d for d in deps if modules()[d].name != "__init__.py"} for n, deps in g.items()
         if modules()[n].name != "__init__.py"}
    loops, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == "open":
                loops.append(" -> ".join(path[path.index(dep):] + [dep]))
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = "done"

    for node in sorted(g):
        if node not in state:
            visit(node, [node])
    assert loops == []


def test_modules_stay_small():
    big = {n: len(p.read_text(encoding="utf-8").splitlines()) for n, p in modules().items()}
    assert {n: lines for n, lines in big.items() if lines > MAX_LINES} == {}


@pytest.mark.slow
def test_every_module_imports_in_a_fresh_interpreter():
    names = [n for n in modules() if not n.startswith("skillsoup.demo_model")]
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    done = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_every_package_is_listed_for_the_wheel():
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")}
    assert packages - listed == set()


def test_the_public_api_is_importable_from_the_top():
    code = ("from skillsoup import load_model, SkillState, mix, mix_ref, SkillSoup, Router, SkillRegistry, "
            "load_skills, Skill, SkillMatch, StateModel, Answer, SkillsoupError")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
