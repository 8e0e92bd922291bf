"""Helpers shared by the registry and CLI tests: small skills, skill files, subprocess runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from skillsoup.skills.skill import Demonstration, Skill

REPO = Path(__file__).resolve().parents[2]


def make_skill(name: str, n: int = 4, description: str | None = None, template: str | None = None) -> Skill:
    demos = tuple(Demonstration(f"{name} input {i}", f"{name} output {i}") for i in range(n))
    extra = {"template": template} if template else {}
    return Skill(name, description or f"the {name} skill", demos, tags=("test",), **extra)


def write_skill_yaml(folder: Path, name: str, n: int = 3, description: str | None = None) -> Path:
    """A YAML skill file (the format of docs/skills.md)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"name: {name}", f"description: {description or 'the ' + name + ' skill'}", "tags: [test]",
             "demonstrations:"]
    lines += [f"  - {{input: '{name} input {i}', output: '{name} output {i}'}}" for i in range(n)]
    path = folder / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def subprocess_env(**extra) -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
               SKILLSOUP_EMBEDDER="hash:32", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_python(args: list[str], timeout: float = 120, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout,
                          env=subprocess_env(**env), cwd=REPO)


def build_checkpoint(path, arch: str = "mamba", seed: int = 0, **overrides):
    """tests/helpers.py's checkpoint builder (imported here, not at the top: crash_worker.py runs this
    module in a subprocess that has no tests/ folder on its path)."""
    from helpers import build_checkpoint as build

    return build(path, arch, seed=seed, **overrides)
