"""kill -9 during a write leaves every earlier skill intact and no half skill visible; doctor removes
the leftovers and a re-run completes. crash_worker.py runs the cases in a subprocess (one forked child each)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from registry_helpers import make_skill, subprocess_env

from skillsoup.registry import SkillRegistry

WORKER = Path(__file__).with_name("crash_worker.py")
LEFTOVER_KINDS = {"orphan demo row", "orphan state file", "stray file"}

# point -> (skills visible after the crash, leftover kinds doctor must find)
CASES = {
    "state-before-rename": (["s0", "s1", "s2"], {"stray file"}),
    "after-state": (["s0", "s1", "s2"], {"orphan state file"}),
    "mid-demos": (["s0", "s1", "s2"], {"orphan state file", "orphan demo row"}),
    "after-demos": (["s0", "s1", "s2"], {"orphan state file", "orphan demo row"}),
    "after-replace-commit": (["s0", "s1"], {"orphan state file", "orphan demo row"}),
    "mid-remove": (["s0"], {"orphan state file", "orphan demo row"}),
}


def expected_content(name: str, point: str):
    if point == "after-replace-commit" and name == "s0":
        return make_skill("s0", n=3, description="version 2")
    if name.startswith("x"):
        return make_skill(name, n=6)
    return make_skill(name)


def check_consistent(reg: SkillRegistry, model, visible: list[str], point: str) -> None:
    """What any reader may rely on after a crash, before any repair."""
    assert reg.names() == visible
    for name in visible:
        assert reg.get(name) == expected_content(name, point)
        reg.state(name, model, recompute=False)  # intact and verified, never recomputed
    everything = ["s0", "s1", "s2", "s3", "s4"]
    for name in everything:
        for hit in reg.query_demonstrations(reg.embed_texts([f"{name} input 1"])[0], 10):
            assert hit.skill in visible


def repair_and_finish(reg: SkillRegistry, model, point: str, leftovers: set[str] | None) -> None:
    report = reg.doctor(model, repair=False)
    kinds = set(report.counts())
    assert kinds <= LEFTOVER_KINDS, report.problems  # only leftovers, never a damaged committed skill
    if leftovers is not None:
        assert kinds == leftovers, report.problems
    if kinds:
        assert reg.doctor(model).repaired
    assert reg.doctor(model, repair=False).clean
    # the interrupted work can be redone; the lock of the dead writer is gone with it
    redo = [make_skill(n) for n in ("s2", "s3", "s4")]
    if point == "after-replace-commit":
        redo = [make_skill("s0", n=3, description="version 2"), make_skill("s2")]
    reg.add(redo, model, replace=True)
    assert reg.doctor(model, repair=False).clean


@pytest.fixture(scope="module")
def crashed(tmp_path_factory, mamba_dir):
    """Run every crash point once (one worker process, one forked child per point) -> base folder."""
    base = tmp_path_factory.mktemp("crashed")
    points = [*CASES, "external"]
    proc = subprocess.run([sys.executable, str(WORKER), str(mamba_dir), str(base), *points],
                          capture_output=True, text=True, timeout=300, env=subprocess_env())
    status = dict(line.split() for line in proc.stdout.splitlines() if line.strip())
    assert proc.returncode == 0 and set(status) == set(points), proc.stdout + proc.stderr
    return base, {p: int(s) for p, s in status.items()}, proc.stderr


@pytest.mark.parametrize("point", list(CASES))
def test_kill_during_write_leaves_a_consistent_registry(point, crashed, tiny_model):
    base, status, stderr = crashed
    assert status[point] == -signal.SIGKILL, stderr
    visible, leftovers = CASES[point]
    with SkillRegistry.open(base / point, embedder="hash:32") as reg:
        check_consistent(reg, tiny_model, visible, point)
        repair_and_finish(reg, tiny_model, point, leftovers)


def test_kill_from_outside_at_an_arbitrary_moment(crashed, tiny_model):
    base, status, stderr = crashed
    assert status["external"] == -signal.SIGKILL, stderr
    with SkillRegistry.open(base / "external", embedder="hash:32") as reg:
        names = reg.names()
        added = [n for n in names if n.startswith("x")]
        assert names[:2] == ["s0", "s1"] and len(added) >= 32  # the first chunk was committed
        assert added == [f"x{i:02d}" for i in range(len(added))]  # a prefix: no gaps, no half skill
        check_consistent(reg, tiny_model, names, "external")
        repair_and_finish(reg, tiny_model, "external", None)
