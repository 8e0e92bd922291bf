"""Continuous batching: many requests decoded together, each batch row reading from its own state.

    engine = Engine(model, EngineConfig(max_batch=32)).start()
    job = engine.submit(prepared, deadline=time.monotonic() + 60, emit=callback)   # a Prepared request
    job.cancel()            # the client went away: its row is freed before the next step
    engine.stop()

One thread owns the model. Each iteration it admits waiting requests into free rows, then runs one
``StateModel.step`` over all rows: a row still reading its prompt feeds its next prompt token (the
logits are dropped), a row that is answering feeds the token it sampled last. A finished, cancelled
or timed-out row leaves the batch at once (``SkillState.rows``); a new one joins it
(``SkillState.cat``). Both copy, so a group's batch state is its own and each step writes over it
(``StateModel.step_``; 1.3x / 2.1x faster steps at 32 rows of mamba-130m / mamba2-130m on a CPU).
Rows whose states cannot be stacked (``cat`` raises StateMismatchError, e.g. attention caches of
different lengths in a hybrid model) are stepped in separate groups.

Prefill. A request reads its prompt, all tokens but the last, in a parallel pass as
``SkillSoup.stream`` does; the requests admitted in one iteration read theirs together in one padded
pass (``StateModel.capture_many``) where the model reads padding exactly (recurrent-only models).
With ``auto`` (the default) a model that cannot (a hybrid: one ``capture`` per request) reads in
parallel only while few rows decode (``parallel_prefill_below``) and otherwise one prompt token per
batched step (chunked prefill), so that one request's pass never stalls a busy batch. Measured at 32
routed clients on the demo model (benchmarks/bench_serve.py): the padded pass took the engine
thread's CPU per request from 19 to 12 ms and TTFT p95 from 1.8-2.4 s to 1.4 s against chunked
prefill, which feeds a ~50-token prompt through ~50 batched steps before the first answer token.
The last prompt token always goes through a batched step, whose logits give the first answer token.
One pass reads only as many prompts as the prefill budget allows (about 8 decode steps' work, at
least ``prefill_pass_ms``; scheduling.py), so a burst of long prompts on a large model is read over
several iterations with decode steps between, and running answers keep streaming.

Exactness: the same prompt from the same state, the same sampler (greedy = first argmax) and the
same stop rules (``StopDecoder``, EOS) as ``SkillSoup.stream``. Batched steps sum in another order
than a batch-1 step, so logits agree to about 1e-6, not bit for bit; greedy answers are the same
unless two tokens tie that closely.

``emit(event)`` is called on the engine thread with :class:`Piece` events, then one :class:`Done`
or :class:`Failed`; a cancelled request gets nothing more.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

import torch

from skillsoup.errors import StateMismatchError
from skillsoup.models.generation import StopDecoder, sample
from skillsoup.runtime import AnswerText, Prepared
from skillsoup.serve.events import Done, Event, Failed, Piece
from skillsoup.serve.scheduling import PREFILL_MODES, EngineConfig, EngineStats, PrefillBudget, elapsed_ms  # noqa: F401
from skillsoup.states.state import SkillState

log = logging.getLogger(__name__)

# ---- requests inside the engine ------------------------------------------------------------------
class Job:
    """A submitted request. ``cancel()`` is safe from any thread."""

    def __init__(self, prepared: Prepared, deadline: float, emit: Callable[[Event], None]):
        self.prepared = prepared
        self.deadline = deadline
        self.emit = emit
        self.submitted = time.monotonic()
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class _Row:
    def __init__(self, job: Job, model, parallel: bool, admitted: float, prefill_ms: float):
        p = job.prepared
        self.job = job
        self.prompt = list(p.prompt_ids)
        self.pos = len(self.prompt) - 1 if parallel else 0  # next prompt token to feed
        self.last = -1  # the token sampled last (fed once the prompt is read)
        self.decoder = StopDecoder(model, p.stop)
        self.text = AnswerText()
        self.generator = torch.Generator().manual_seed(p.seed) if p.seed is not None else None
        self.n = 0
        self.admitted = admitted
        self.prefill_ms = prefill_ms
        self.first: float | None = None
        self.live = True

    def next_input(self) -> int:
        return self.prompt[self.pos] if self.pos < len(self.prompt) else self.last


@dataclass
class _Group:
    """Rows whose states stack into one batch."""

    state: SkillState
    rows: list[_Row]


# ---- the engine ----------------------------------------------------------------------------------
class Engine:
    def __init__(self, model, config: EngineConfig | None = None):
        self.model = model
        self.config = config or EngineConfig()
        self.stats = EngineStats()
        self._budget = PrefillBudget(self.config.prefill_pass_ms)
        self._device = model.device  # read once: transformers' lookup behind it is slow for every step
        self._inbox: deque[Job] = deque()
        self._cv = threading.Condition()
        self._groups: list[_Group] = []
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> Engine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="skillsoup-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread; requests still waiting or decoding get Failed("server_error")."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def submit(self, prepared: Prepared, deadline: float, emit: Callable[[Event], None]) -> Job:
        job = Job(prepared, deadline, emit)
        with self._cv:
            if self._stopping:
                raise RuntimeError("the engine is stopped")
            self._inbox.append(job)
            self.stats.waiting = len(self._inbox)
            self._cv.notify()
        return job

    # ---- the loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    while not self._stopping and not self._inbox and not self._groups:
                        self._cv.wait()
                    if self._stopping:
                        break
                    waiting = list(self._inbox)
                self._sweep_waiting(waiting)
                self._admit()
                self._sweep_rows()
                if self._groups:
                    self._step()
        except BaseException:  # never die silently: every request still here is told
            log.exception("the batching engine stopped on an unexpected error")
            raise
        finally:
            self._fail_everything("the server is shutting down; retry the request")

    def _admit(self) -> None:
        """Move waiting requests into free rows. Those that read their prompt in parallel read it
        together, in one padded pass (``StateModel.capture_many``): one call's fixed cost for all,
        as many as the prefill budget lets one pass read (scheduling.py); the rest wait one step."""
        mode, busy = self.config.prefill, self.stats.rows >= self.config.parallel_prefill_below
        parallel = mode == "parallel" or (mode == "auto" and (self.model.pads_exactly or not busy))
        jobs, n_reading, longest = [], 0, 0
        while self.stats.rows + len(jobs) < self.config.max_batch:
            with self._cv:
                if not self._inbox:
                    break
                job = self._inbox[0]
                reads = (parallel and not job.cancelled and job.prepared.max_new_tokens > 0
                         and time.monotonic() <= job.deadline)  # the others leave without a pass
                n = len(job.prepared.prompt_ids) - 1 if reads else 0  # prompt tokens a pass would read
                if n > 0 and not self._budget.fits(n_reading + 1, max(longest, n)):
                    break
                self._inbox.popleft()
                self.stats.waiting = len(self._inbox)
            if job.cancelled:
                self.stats.cancelled += 1
            elif time.monotonic() > job.deadline:
                self._timeout(job)
            elif job.prepared.max_new_tokens == 0:
                self.stats.admitted += 1
                self.stats.finished += 1
                _tell(job, Done("length", len(job.prepared.prompt_ids), 0,
                                {"queue_ms": _ms(job.submitted, time.monotonic())}))
            else:
                jobs.append(job)
                n_reading, longest = n_reading + (n > 0), max(longest, n)
        if not jobs:
            return
        reading = [j for j in jobs if parallel and len(j.prepared.prompt_ids) > 1]
        if len(reading) > 1:
            admitted, t0 = time.monotonic(), time.perf_counter()
            try:
                state = self.model.capture_many([j.prepared.prompt_ids[:-1] for j in reading],
                                                [j.prepared.state for j in reading])
            except Exception:  # then each request is read alone, and one that cannot start fails alone
                log.warning("reading %d prompts together failed; reading them one by one", len(reading), exc_info=True)
            else:
                ms = elapsed_ms(t0, self._device)
                self._budget.measured_pass(len(reading), longest, ms)
                self.stats.admitted += len(reading)
                self.stats.parallel_prefills += len(reading)
                self.stats.prefill_passes += 1
                self._join(state, [_Row(j, self.model, True, admitted, ms) for j in reading])
                jobs = [j for j in jobs if j not in reading]
        for job in jobs:
            try:
                self._place(job, parallel)
            except Exception as exc:  # a request that cannot start fails alone
                log.exception("could not start a request")
                self.stats.failed += 1
                _tell(job, Failed("server_error", f"could not start decoding: {exc}"))

    def _place(self, job: Job, parallel: bool) -> None:
        p = job.prepared
        self.stats.admitted += 1
        state, admitted, t0 = p.state, time.monotonic(), time.perf_counter()
        reads = parallel and len(p.prompt_ids) > 1
        if reads:
            state = self.model.capture(list(p.prompt_ids[:-1]), state)
        ms = elapsed_ms(t0, self._device) if parallel else 0.0
        if reads:
            self._budget.measured_pass(1, len(p.prompt_ids) - 1, ms)
            self.stats.prefill_passes += 1
        self.stats.parallel_prefills += parallel
        self.stats.step_prefills += not parallel
        row = _Row(job, self.model, parallel, admitted, ms)
        self._join(state, [row])

    def _join(self, state: SkillState, rows: list[_Row]) -> None:
        """Add rows (their states stacked in ``state``) to the first group they stack with."""
        for group in self._groups:
            try:
                group.state = SkillState.cat([group.state, state])
            except StateMismatchError:
                continue
            group.rows.extend(rows)
            break
        else:
            self._groups.append(_Group(SkillState.cat([state]), rows))
        self._count_rows()

    def _sweep_waiting(self, waiting: list[Job]) -> None:
        """Cancelled or expired requests leave the queue without waiting for a row."""
        now = time.monotonic()
        gone = [j for j in waiting if j.cancelled or now > j.deadline]
        if not gone:
            return
        with self._cv:
            for job in gone:
                try:
                    self._inbox.remove(job)
                except ValueError:
                    continue
                if job.cancelled:
                    self.stats.cancelled += 1
                else:
                    self._timeout(job)
            self.stats.waiting = len(self._inbox)

    def _sweep_rows(self) -> None:
        now = time.monotonic()
        for group in self._groups:
            for row in group.rows:
                if row.job.cancelled:
                    row.live = False
                    self.stats.cancelled += 1
                elif now > row.job.deadline:
                    row.live = False
                    self._timeout(row.job)
        self._compact()

    def _step(self) -> None:
        t0 = time.perf_counter()
        for group in list(self._groups):
            tokens = [row.next_input() for row in group.rows]
            try:
                logits, group.state = self.model.step_(tokens, group.state)  # the group owns its state
            except Exception as exc:  # a failing step fails its rows, not the server
                log.exception("a decoding step failed")
                for row in group.rows:
                    row.live = False
                    self.stats.failed += 1
                    _tell(row.job, Failed("server_error", f"decoding failed: {exc}"))
                continue
            self.stats.steps += 1
            self.stats.row_steps += len(group.rows)
            greedy = logits.argmax(-1).tolist()
            for i, row in enumerate(group.rows):
                self._advance(row, logits[i], greedy[i])
        self._budget.measured_step(elapsed_ms(t0, self._device))
        self._compact()

    def _advance(self, row: _Row, logits: torch.Tensor, greedy_token: int) -> None:
        if row.pos < len(row.prompt):
            row.pos += 1
            if row.pos < len(row.prompt):  # still reading the prompt: these logits are not used
                return
        p = row.job.prepared
        token = greedy_token if p.temperature == 0 else sample(logits, p.temperature, p.top_p, None, row.generator)
        if row.first is None:
            row.first = time.monotonic()
        self.stats.tokens += 1
        if token in p.stop_ids:
            self._finish(row, "stop", tail=True)
            return
        row.n += 1
        piece, done = row.decoder.push(token)
        self._say(row, piece)
        if done:
            self._finish(row, "stop", tail=False)
        elif row.n >= p.max_new_tokens:
            self._finish(row, "length", tail=True)
        else:
            row.last = token

    def _say(self, row: _Row, piece: str) -> None:
        piece = row.text.add(piece) if piece else ""
        if piece:
            _tell(row.job, Piece(piece))

    def _finish(self, row: _Row, reason: str, tail: bool) -> None:
        if tail:
            self._say(row, row.decoder.finish())
        row.live = False
        self.stats.finished += 1
        end, job = time.monotonic(), row.job
        p = job.prepared
        timings = {"route_ms": p.plan.route_ms, "load_mix_ms": p.load_mix_ms,
                   "queue_ms": _ms(job.submitted, row.admitted), "prefill_ms": row.prefill_ms, "first_token_ms": _ms(row.admitted, row.first or end),
                   "total_ms": _ms(job.submitted, end)}
        _tell(job, Done(reason, len(p.prompt_ids), row.n, timings))

    def _timeout(self, job: Job) -> None:
        self.stats.timed_out += 1
        _tell(job, Failed("timeout", "the request ran past the server's time limit; ask for fewer tokens or retry"))

    def _compact(self) -> None:
        """Drop the rows that are no longer live, from the batch state too."""
        kept = []
        for group in self._groups:
            keep = [i for i, row in enumerate(group.rows) if row.live]
            if len(keep) == len(group.rows):
                kept.append(group)
            elif keep:
                kept.append(_Group(group.state.rows(keep), [group.rows[i] for i in keep]))
        self._groups = kept
        self._count_rows()

    def _count_rows(self) -> None:
        self.stats.rows = sum(len(g.rows) for g in self._groups)
        self.stats.groups = len(self._groups)

    def _fail_everything(self, message: str) -> None:
        with self._cv:
            jobs = list(self._inbox) + [row.job for g in self._groups for row in g.rows]
            self._inbox.clear()
            self._groups = []
            self.stats.waiting = self.stats.rows = self.stats.groups = 0
        for job in jobs:
            if not job.cancelled:
                _tell(job, Failed("server_error", message))


def _tell(job: Job, event: Event) -> None:
    try:
        job.emit(event)
    except Exception:  # a listener that is gone must not stop the engine
        log.debug("could not deliver %s to a request", type(event).__name__, exc_info=True)


def _ms(start: float, end: float) -> float:
    return max(0.0, (end - start) * 1000)
