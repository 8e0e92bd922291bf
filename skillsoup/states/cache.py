"""StateCache: skill states kept in memory, least recently used first out, within a byte budget.

Keys are ``(skill name, content hash, model fingerprint)``: a changed skill or another model is a
different entry, so a stale state is never served. Sizes come from ``SkillState.nbytes``; a state
larger than the whole budget is returned but not kept.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable

from skillsoup.states.state import SkillState

log = logging.getLogger(__name__)

Key = tuple[str, str, str]
DEFAULT_BUDGET = 512 * 2**20


class StateCache:
    def __init__(self, max_bytes: int = DEFAULT_BUDGET):
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict[Key, SkillState] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Key) -> bool:
        return key in self._items

    def get(self, key: Key, load: Callable[[], SkillState]) -> SkillState:
        """The cached state for ``key``, else ``load()`` (outside the lock), kept if it fits."""
        state = self.lookup(key)
        if state is None:
            state = load()
            self.put(key, state)
        return state

    def lookup(self, key: Key) -> SkillState | None:
        """The cached state for ``key`` (now the most recently used), or None; counts a hit or a miss."""
        with self._lock:
            state = self._items.get(key)
            if state is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return state

    def put(self, key: Key, state: SkillState) -> None:
        size = state.nbytes
        with self._lock:
            if key in self._items:
                self._bytes -= self._items.pop(key).nbytes
            if size > self.max_bytes:
                log.debug("state %s (%d bytes) is over the cache budget of %d bytes: not kept", key[0], size, self.max_bytes)
                return
            while self._items and self._bytes + size > self.max_bytes:
                old_key, old = self._items.popitem(last=False)
                self._bytes -= old.nbytes
                log.debug("evicted state %s from the cache", old_key[0])
            self._items[key] = state
            self._bytes += size

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
