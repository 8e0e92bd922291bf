"""One writer at a time on an embedded registry: a second process gets a clear message and exit 1,
or waits when the first one finishes in time."""

from __future__ import annotations

import os
import threading
import time

import pytest
from registry_helpers import make_skill, run_python

from skillsoup.errors import RegistryError, RegistryLockedError
from skillsoup.registry import RegistryLock

CLI = "import sys; from skillsoup.cli import main; sys.exit(main(sys.argv[1:]))"


def test_second_process_is_blocked_with_a_clear_message(open_registry, tmp_path, tiny_model):
    reg = open_registry()
    reg.add([make_skill("alpha")], tiny_model)
    with RegistryLock(reg.path):  # this process is the writer
        proc = run_python(["-c", CLI, "skills", "remove", "alpha", "--registry", str(reg.path)],
                          SKILLSOUP_LOCK_TIMEOUT="0.3")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert f"registry {reg.path} is being written by another process (pid {os.getpid()})" in proc.stderr
    assert "--chroma-url" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    assert len(proc.stderr.strip().splitlines()) == 1
    assert reg.names() == ["alpha"]


def test_writer_waits_for_the_lock_and_then_writes(open_registry, tiny_model):
    reg = open_registry(lock_timeout=20)
    holder = RegistryLock(reg.path)
    holder.acquire()
    releaser = threading.Timer(0.5, holder.release)
    releaser.start()
    t0 = time.monotonic()
    try:
        assert [r.status for r in reg.add([make_skill("alpha")], tiny_model)] == ["added"]
    finally:
        releaser.join()
    assert time.monotonic() - t0 >= 0.4


def test_lock_times_out_in_process_and_names_the_holder(open_registry, tiny_model):
    reg = open_registry(lock_timeout=0.2)
    with RegistryLock(reg.path):
        assert RegistryLock(reg.path).holder_pid() == os.getpid()
        with pytest.raises(RegistryLockedError, match=f"pid {os.getpid()}"):
            reg.add([make_skill("alpha")], tiny_model)
        with pytest.raises(RegistryLockedError):
            reg.set_setting("k", 1)
    assert reg.names() == []
    reg.add([make_skill("alpha")], tiny_model)  # free again
    assert RegistryLock(reg.path).holder_pid() is None  # the pid is cleared on release


def test_lock_is_reentrant_within_one_registry(tmp_path):
    lock = RegistryLock(tmp_path, timeout=0.1)
    with lock, lock:
        assert lock.held
    assert not lock.held
    with RegistryLock(tmp_path, timeout=0.1):
        pass


def test_bad_lock_timeout_setting_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SKILLSOUP_LOCK_TIMEOUT", "soon")
    with pytest.raises(RegistryError, match="SKILLSOUP_LOCK_TIMEOUT"):
        RegistryLock(tmp_path).acquire()
