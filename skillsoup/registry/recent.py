"""Skill rows read recently: the hot read path of a server, which needs each request's skill (its
template) and would otherwise read the same few rows from Chroma for every request, and the commit
check of every routed query (which skills' demonstration rows are current).

``SkillIndex`` bumps ``generation`` after every write to its skill rows, so a row cached before a
write of this process is never served after it (a skill added, replaced or removed over the server's
admin routes shows at once). Writes by another process (``skillsoup add`` against a shared Chroma
server) show once the cached row is ``max_age`` seconds old. ``max_age`` 0 reads every time.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Sequence

MAX_ROWS = 4096  # names remembered (unknown names too); past it the memory starts over


class RecentRows:
    def __init__(self) -> None:
        self.generation = 0
        self._rows: dict[tuple[str, str], tuple[float, int, object]] = {}  # (kind, name) -> (read at, generation, row or None)
        self._lock = threading.Lock()

    def bump(self) -> None:
        with self._lock:
            self.generation += 1

    def get(self, names: Sequence[str], max_age: float, read: Callable[[list[str]], dict], kind: str = "row") -> dict:
        """``read(names)`` (name -> row, absent names left out), answered from rows read at most
        ``max_age`` seconds ago and since the last write of this process. ``kind`` keeps apart what
        different ``read`` functions return for the same name."""
        if max_age <= 0:
            return read(list(dict.fromkeys(names)))
        now, generation = time.monotonic(), self.generation  # before reading: a write meanwhile outdates it
        out, missing = {}, []
        for name in dict.fromkeys(names):
            seen = self._rows.get((kind, name))
            if seen is not None and seen[1] == generation and now - seen[0] <= max_age:
                if seen[2] is not None:
                    out[name] = seen[2]
            else:
                missing.append(name)
        if missing:
            rows = read(missing)
            with self._lock:
                if len(self._rows) + len(missing) > MAX_ROWS:
                    self._rows.clear()
                self._rows.update(((kind, name), (now, generation, rows.get(name))) for name in missing)
            out.update(rows)
        return out


def writes_skill_rows(method):
    """Marks a SkillIndex method that writes skill rows: rows cached before it ends are stale."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        finally:
            self.recent.bump()

    return wrapper
