"""StateBank: skill states resident on the device that uses them, fed from pinned host memory.

A :class:`~skillsoup.states.cache.StateCache` (least recently used out, within a byte budget) whose
states live on ``device``. On a miss the state is loaded (a file read, usually on the CPU), copied
once into page-locked ("pinned") host memory and from there to the GPU with an asynchronous copy on
the current stream, so the kernels that mix and read it are ordered after it without a host wait.
The pinned copies form a second tier with its own budget: a state evicted from the GPU comes back
from there, not from its file. On a CPU model the bank is the plain cache (nothing to stage).

Mixing K banked states is then one launch over K device buffers (``mix``: the Triton kernel on CUDA,
writing straight into the state the model reads).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from skillsoup.states.cache import DEFAULT_BUDGET, Key, StateCache
from skillsoup.states.state import SkillState

log = logging.getLogger(__name__)


def _map(state: SkillState, fn) -> SkillState:
    """A new state with ``fn`` applied to each of its tensors (the flat buffer, KV, positions, bias)."""
    parts = {name: fn(t) for name, t in state.tensors().items()}
    kv = {k: v for k, v in parts.items() if k != "fixed"} or None
    return SkillState.from_flat(state.layout, parts["fixed"], state.n_tokens, state.fingerprint, state.arch,
                                state.meta, kv)


def pin(state: SkillState) -> SkillState:
    """A page-locked host copy of ``state`` (needs CUDA: pinned memory belongs to its driver)."""
    return _map(state, lambda t: t.detach().cpu().pin_memory())


def to_device(state: SkillState, device: torch.device, non_blocking: bool = False) -> SkillState:
    """``state`` on ``device``; from pinned memory the copy is asynchronous on the current stream."""
    if state.device == device:
        return state
    return _map(state, lambda t: t.to(device, non_blocking=non_blocking))


class StateBank(StateCache):
    """States on ``device`` (``max_bytes`` there) and their pinned host copies (``host_bytes``).

    ``host_bytes=None`` gives the host tier the device's budget on CUDA and nothing elsewhere.
    ``get(key, load)`` returns the state on the device; ``load()`` may return it anywhere.
    """

    def __init__(self, max_bytes: int = DEFAULT_BUDGET, device: str | torch.device = "cpu",
                 host_bytes: int | None = None):
        super().__init__(max_bytes)
        self.device = torch.device(device)
        self.staged = self.device.type == "cuda"
        self.host = StateCache(max_bytes if host_bytes is None and self.staged else (host_bytes or 0))
        self.loads = 0  # calls of load(): misses of both tiers

    def get(self, key: Key, load: Callable[[], SkillState]) -> SkillState:
        state = self.lookup(key)
        if state is not None:
            return state
        host = self.host.lookup(key)
        if host is None:
            self.loads += 1
            host = load()
            if self.staged:
                host = pin(host)
            self.host.put(key, host)
        # asynchronous only from pinned memory; the host allocator keeps it until the copy is done
        state = to_device(host, self.device, non_blocking=self.staged)
        self.put(key, state)
        log.debug("state %s on %s (%d bytes)", key[0], self.device, state.nbytes)
        return state

    def clear(self) -> None:
        super().clear()
        self.host.clear()
