"""What the batching engine (engine.py) decides with: its settings, its counters, and the prefill
budget that splits a burst of requests over several passes.

The prefill budget. A request reads its prompt in a parallel pass before its first decode step, and
requests admitted together read theirs in one padded pass. While that pass runs, no row decodes. On
the demo model a pass over 32 prompts takes milliseconds; on a mamba-130m-shaped model on a 2-core
CPU it takes seconds (about 4 ms per prompt token), so a burst of 32 requests froze every running
answer and gave every new one its first token only after the last prompt was read. The budget caps
one pass at about ``max(prefill_pass_ms, PASS_STEPS x the last decode step)`` of work, estimated
from the passes before (milliseconds per padded prompt token); the rest of the burst waits for the
next iteration, after one decode step. At least one request is admitted per iteration, and the first
two passes read one request each, to measure (the first, cold one is not counted). A single-prompt
pass also carries the call's fixed cost, so the estimate errs high for larger passes: on the demo
model a burst of 32 is read in 2-3 passes of a few milliseconds instead of one, with no change in
throughput measured. ``prefill_pass_ms=0`` turns the budget off (every waiting request in one pass).
The timings are wall clock after the pass (on CUDA, after a synchronize).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch

PREFILL_MODES = ("auto", "parallel", "steps")
PASS_STEPS = 8  # a pass may take as long as this many decode steps of the current batch
_SMOOTHING = 0.3  # weight of the newest measurement in the running estimates


@dataclass(frozen=True)
class EngineConfig:
    max_batch: int = 32  # rows decoded together
    prefill: str = "auto"  # "parallel", "steps", or "auto" (parallel if padded passes are exact, else while
    #                        fewer rows than below decode)
    parallel_prefill_below: int = 2
    prefill_pass_ms: float = 50.0  # least work one prefill pass may take (see the module docstring); 0: no cap

    def __post_init__(self) -> None:
        if not isinstance(self.max_batch, int) or self.max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer, got {self.max_batch!r}")
        if self.prefill not in PREFILL_MODES:
            raise ValueError(f"prefill must be one of {PREFILL_MODES}, got {self.prefill!r}")
        if not self.prefill_pass_ms >= 0:
            raise ValueError(f"prefill_pass_ms must be 0 or more, got {self.prefill_pass_ms!r}")


@dataclass
class EngineStats:
    """Counters since start (written by the engine thread only) and the live sizes."""

    steps: int = 0  # batched model steps
    row_steps: int = 0  # rows summed over steps
    tokens: int = 0  # answer tokens sampled, cancelled requests included
    admitted: int = 0
    finished: int = 0
    cancelled: int = 0
    timed_out: int = 0
    failed: int = 0
    parallel_prefills: int = 0
    step_prefills: int = 0
    prefill_passes: int = 0  # parallel passes (one per request, or one padded pass for several)
    rows: int = 0  # now decoding
    waiting: int = 0  # now waiting for a row
    groups: int = 0  # now stepped separately

    def to_dict(self) -> dict:
        return asdict(self)


class PrefillBudget:
    """Whether one more prompt fits in this iteration's prefill pass (engine thread only)."""

    def __init__(self, pass_ms: float):
        self.pass_ms = pass_ms
        self.ms_per_token: float | None = None  # None: no warm pass measured yet
        self.step_ms = 0.0
        self._cold = True  # the first pass pays for first-call allocations: not a measurement

    def fits(self, n_prompts: int, longest: int) -> bool:
        """Would a padded pass over ``n_prompts`` prompts of at most ``longest`` tokens stay within
        budget? (The first prompt of an iteration always goes in.)"""
        if n_prompts <= 1 or self.pass_ms == 0:
            return True
        if self.ms_per_token is None:
            return False  # the first pass reads one prompt and measures
        return n_prompts * longest * self.ms_per_token <= max(self.pass_ms, PASS_STEPS * self.step_ms)

    def measured_pass(self, n_prompts: int, longest: int, ms: float) -> None:
        if self._cold:
            self._cold = False
            return
        self.ms_per_token = _smooth(self.ms_per_token, ms / max(1, n_prompts * longest))

    def measured_step(self, ms: float) -> None:
        self.step_ms = _smooth(self.step_ms or None, ms)


def _smooth(old: float | None, new: float) -> float:
    return new if old is None else (1 - _SMOOTHING) * old + _SMOOTHING * new


def elapsed_ms(t0: float, device: torch.device) -> float:
    """Milliseconds since ``t0`` (perf_counter) once the device's queued work is done: CUDA kernels
    return before they run, and an unsynchronized pass would look free."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - t0) * 1000
