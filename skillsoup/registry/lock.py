"""RegistryLock: one writer at a time on an embedded registry.

Chroma's PersistentClient is not process-safe (two writers have hung and corrupted indexes), so every
writer holds an exclusive ``fcntl.flock`` on ``REGISTRY/.lock``. The kernel drops the lock when its
holder dies, even by kill -9, so a crashed writer never blocks the next one. The holder's pid is
written into the file for the message the next writer sees.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from skillsoup.errors import RegistryError, RegistryLockedError

log = logging.getLogger(__name__)

_POLL_S = 0.05


class RegistryLock:
    """Re-entrant within one object: nested ``with lock:`` blocks take the file lock once."""

    def __init__(self, registry_dir: str | os.PathLike, timeout: float | None = None):
        self.dir = Path(registry_dir)
        self.path = self.dir / ".lock"
        self.timeout = timeout
        self._fd: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def holder_pid(self) -> int | None:
        try:
            text = self.path.read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() else None

    def acquire(self) -> None:
        if self._fd is not None:
            self._depth += 1
            return
        from skillsoup.config import lock_timeout

        timeout = lock_timeout() if self.timeout is None else self.timeout
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RegistryError(f"cannot create the registry lock {self.path}: {exc.strerror}; check the folder's permissions") from None
        if not _flock_within(fd, fcntl.LOCK_EX, timeout):
            os.close(fd)
            pid = self.holder_pid()
            raise RegistryLockedError(
                f"registry {self.dir} is being written by another process (pid {pid if pid else '?'}); "
                "wait for it or use a Chroma server with --chroma-url"
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd, self._depth = fd, 1
        log.debug("took the registry lock %s", self.path)

    def release(self) -> None:
        if self._fd is None:
            return
        self._depth -= 1
        if self._depth > 0:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)  # no stale pid for the next reader of the file
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RegistryLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _flock_within(fd: int, operation: int, timeout: float) -> bool:
    """Take ``flock(fd, operation)``, polling until ``timeout`` seconds have passed; False if not taken."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(_POLL_S)


@contextmanager
def shared_lock(registry_dir: str | os.PathLike, timeout: float | None = None) -> Iterator[None]:
    """A reader's lock for a registry it may not write: ``flock(LOCK_SH)`` on the existing lock
    file, opened read-only, so no writer is mid-write while it is held. Without a lock file (no
    writer ever ran) there is nothing to wait for."""
    from skillsoup.config import lock_timeout

    path = Path(registry_dir) / ".lock"
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        if not _flock_within(fd, fcntl.LOCK_SH, lock_timeout() if timeout is None else timeout):
            raise RegistryLockedError(f"registry {path.parent} is being written by another process; wait for it and "
                                      "try again")
        yield
    finally:
        os.close(fd)  # closing drops the lock


class NoLock:
    """Stand-in when a Chroma server serialises index writes (``--chroma-url``)."""

    held = True

    def acquire(self) -> None:
        pass

    def release(self) -> None:
        pass

    def __enter__(self) -> NoLock:
        return self

    def __exit__(self, *exc) -> None:
        pass
