"""A registry this process may read but not write: every read works (list, get, query, states, the
state router's features), every write says the folder is read-only before touching it, and not one
byte of the folder changes (Chroma writes to its database even to open it, so the index is read from
a private copy).

The library tests open with ``read_only=True`` (or a folder reported unwritable), which works as root.
The command-line test makes the folder read-only for real: ``chmod -R a-w``, and as root (whom chmod
does not stop) runs the command without the capability that lets root ignore file modes."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from registry_helpers import make_skill, subprocess_env

from skillsoup.compose import compose_skill
from skillsoup.errors import RegistryReadOnlyError
from skillsoup.registry import SkillRegistry, capture_skill
from skillsoup.registry import opening as opening_module
from skillsoup.routing.router import Router, RouterParams
from skillsoup.skills.skill import Demonstration

EMBEDDER = "hash:32"


def folder_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def built(tmp_path, tiny_model) -> Path:
    path = tmp_path / "reg"
    with SkillRegistry.open(path, embedder=EMBEDDER) as reg:
        reg.add([make_skill("alpha"), make_skill("beta", n=2, description="second skill")], tiny_model)
        reg.set_setting("note", "kept")
    return path


def test_every_read_works_and_nothing_is_written(built, tiny_model, second_model):
    before = folder_digest(built)
    with SkillRegistry.open(built, read_only=True) as reg:
        assert reg.read_only and reg.embedder.name == EMBEDDER
        assert reg.names() == ["alpha", "beta"] and reg.get("alpha") == make_skill("alpha")
        assert reg.info("beta").description == "second skill" and reg.get_setting("note") == "kept"
        stored = reg.state("alpha", tiny_model, recompute=False)
        assert stored.fingerprint == tiny_model.fingerprint
        # a model with no stored state: computed for this use, kept nowhere
        fresh = reg.state("alpha", second_model)
        expected = capture_skill(second_model, make_skill("alpha"))
        assert all((x == y).all() for x, y in zip(fresh.ssm, expected.ssm))
        assert reg.info("alpha").models == (tiny_model.fingerprint,)
        text = Router(reg, params=RouterParams(threshold=-1.0)).route("alpha input 1", top_k=1)
        assert [m.name for m in text] == ["alpha"]
        by_state = Router(reg, tiny_model, RouterParams(threshold=-1.0)).route("alpha input 1", router="state")
        assert by_state  # the state router's features went to the private copy
        report = reg.doctor(tiny_model, repair=False)
        assert report.clean, report.problems
        snapshot = reg._snapshot
        assert snapshot is not None and snapshot.is_dir() and built not in snapshot.parents
    assert not snapshot.exists()  # removed on close
    assert folder_digest(built) == before


@pytest.mark.parametrize("write, action", [
    (lambda reg, m: reg.add([make_skill("gamma")], m), "add skills"),
    (lambda reg, m: reg.remove("alpha"), "remove skill 'alpha'"),
    (lambda reg, m: reg.rebuild(m), "rebuild states"),
    (lambda reg, m: reg.doctor(m, repair=True), "be repaired"),
    (lambda reg, m: reg.set_setting("note", "changed"), "store setting 'note'"),
    (lambda reg, m: compose_skill(reg, m, "blend", ["alpha", "beta"], [Demonstration("a", "b")] * 2),
     "add a composite skill"),
], ids=["add", "remove", "rebuild", "doctor-repair", "setting", "compose"])
def test_every_write_says_the_folder_is_read_only(built, tiny_model, write, action, monkeypatch):
    monkeypatch.setattr("skillsoup.compose.composite.compose", lambda *a, **k: pytest.fail("searched first"))
    before = folder_digest(built)
    with SkillRegistry.open(built, read_only=True) as reg:
        with pytest.raises(RegistryReadOnlyError) as err:
            write(reg, tiny_model)
        assert str(err.value).startswith(f"registry {built} is read-only for this process, so it cannot {action}")
        assert "\n" not in str(err.value)
        assert reg.names() == ["alpha", "beta"]
    assert folder_digest(built) == before


def test_an_unwritable_folder_opens_read_only(built, monkeypatch):
    """What the kernel reports decides (as root every folder is writable, so the answer is simulated)."""
    real_access = os.access
    monkeypatch.setattr(opening_module.os, "access",
                        lambda p, mode: False if mode == os.W_OK and Path(p) == built / "chroma" else real_access(p, mode))
    with SkillRegistry.open(built) as reg:
        assert reg.read_only and reg.names() == ["alpha", "beta"]
    monkeypatch.setattr(opening_module.os, "access", real_access)
    with SkillRegistry.open(built) as reg:
        assert not reg.read_only


def test_a_read_only_folder_without_an_index_reads_as_empty(tmp_path):
    with SkillRegistry.open(tmp_path / "empty", read_only=True, embedder=EMBEDDER) as reg:
        assert reg.names() == [] and reg.list() == []
    assert not (tmp_path / "empty").exists()


# ---- the command line, on a folder the kernel refuses to write ------------------------------------
_NO_OVERRIDE = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--inh-caps", "-all"]


def _read_only_runner(folder: Path) -> list[str]:
    """The command prefix under which ``folder`` (already chmod a-w) cannot be written."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no way to make a folder read-only for a child process "
                    "(the library tests above cover the logic)")
    probe = subprocess.run([*_NO_OVERRIDE, "touch", str(folder / "probe")], capture_output=True, text=True)
    if probe.returncode == 0 or "Permission denied" not in probe.stderr:
        (folder / "probe").unlink(missing_ok=True)
        pytest.skip(f"root cannot drop CAP_DAC_OVERRIDE here ({probe.stderr.strip() or 'the write succeeded'})")
    return _NO_OVERRIDE


def _chmod_tree(path: Path, writable: bool) -> None:
    for p in [path, *path.rglob("*")]:
        mode = p.stat().st_mode
        p.chmod(mode | stat.S_IWUSR if writable else mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


@pytest.mark.slow
def test_the_commands_read_a_read_only_registry(built, tmp_path, mamba_dir):
    """Before: list, route, ask and doctor all failed with "attempt to write a readonly database".
    (route reads what list and ask read; the library tests above route on a read-only registry.)"""
    before = folder_digest(built)
    _chmod_tree(built, writable=False)
    try:
        prefix = _read_only_runner(built)
        env = subprocess_env(SKILLSOUP_HOME=tmp_path / "home", SKILLSOUP_EMBEDDER=EMBEDDER, COLUMNS=200)
        command = [*prefix, str(Path(sys.executable).parent / "skillsoup")]

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([*command, *args, "--registry", str(built)], capture_output=True, text=True,
                                  timeout=300, env=env)

        listed = run("skills", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        assert '"name": "alpha"' in listed.stdout and "Traceback" not in listed.stderr
        asked = run("ask", "alpha input 1", "--model", str(mamba_dir), "--max-tokens", "3", "--skill", "alpha")
        assert asked.returncode == 0 and "pinned alpha 1.00" in asked.stderr, asked.stderr
        doctor = run("doctor", "--model", str(mamba_dir))  # repairing is the default: it checks only
        assert doctor.returncode == 0 and "is healthy: 2 skills" in doctor.stdout, doctor.stderr
        assert "read-only: checking only, repairing nothing" in doctor.stderr
        removed = run("skills", "remove", "alpha")
        assert removed.returncode == 1 and removed.stderr.count("\n") == 1
        assert removed.stderr.startswith(f"error: registry {built} is read-only for this process, so it cannot remove")
    finally:
        _chmod_tree(built, writable=True)
    assert folder_digest(built) == before


def test_the_copy_waits_for_a_writer(built):
    """The private copy is taken under a shared lock: never from the middle of a write."""
    from skillsoup.errors import RegistryLockedError
    from skillsoup.registry import RegistryLock

    with RegistryLock(built):
        with pytest.raises(RegistryLockedError, match=f"registry {built} is being written by another process"):
            SkillRegistry.open(built, read_only=True, lock_timeout=0.2)
    with SkillRegistry.open(built, read_only=True, lock_timeout=0.2) as reg:  # the writer is done
        assert reg.names() == ["alpha", "beta"]
