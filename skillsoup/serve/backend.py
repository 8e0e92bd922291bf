"""What the HTTP layer talks to: admission, planning (routing) in batches, and the engine.

    backend = LocalBackend(soup, EngineConfig(max_batch=32), max_queue=64)
    ticket = backend.admission.take()            # APIError 429 when the server is full
    started = await backend.start(spec)          # plan + prepare + submit; library errors raise here
    async for event in started.events: ...       # Piece ..., then Done or Failed
    started.cancel()                             # the client left: the row is freed

Threads: the event loop (HTTP), one planner (routing; the text router embeds a batch of queued
queries in one call), one preparer (states from the cache or the store, mixing, encoding; a cache miss
may read a file or recapture, and must not stall decoding) and the engine (the model). The Ray
backend (``ray_app.py``) plans in the front and prepares and decodes in a replica, with the same
pieces.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
import weakref
from collections import defaultdict
from dataclasses import dataclass
from functools import partial
from typing import AsyncIterator, Callable

from skillsoup.runtime import Plan, Prepared, SkillSoup
from skillsoup.serve.engine import Engine, EngineConfig, Job
from skillsoup.serve.errors import busy, timed_out
from skillsoup.serve.events import Done, Event, Failed, Piece
from skillsoup.serve.protocol import RequestSpec

log = logging.getLogger(__name__)


class Ticket:
    def __init__(self, admission: Admission):
        self._admission = admission
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._admission.count -= 1


class Admission:
    """At most ``limit`` requests inside the server (planning, waiting or decoding); one more is
    answered 429 at once. Used on the event loop only."""

    def __init__(self, limit: int):
        self.limit = limit
        self.count = 0
        self.rejected = 0

    def take(self) -> Ticket:
        if self.count >= self.limit:
            self.rejected += 1
            raise busy(self.limit)
        self.count += 1
        return Ticket(self)


class Mailbox:
    """Events from other threads onto one event loop, many per wake-up. The engine emits an event
    per row per step; waking the loop for each one (``call_soon_threadsafe`` writes to its
    self-pipe, and the loop thread then wants the GIL) cost the engine thread a tenth of its time
    at 32 rows. Events are handed over in the order they were posted."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._lock = threading.Lock()
        self._pending: list[tuple[asyncio.Queue, Event]] = []
        self._scheduled = False

    def post(self, into: asyncio.Queue, event: Event) -> None:
        with self._lock:
            self._pending.append((into, event))
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:  # the loop is closed: nobody is left to read these
            with self._lock:
                self._pending, self._scheduled = [], False
            raise

    def _deliver(self) -> None:
        with self._lock:
            pending, self._pending, self._scheduled = self._pending, [], False
        for into, event in pending:
            into.put_nowait(event)


_MAILBOXES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def mailbox(loop: asyncio.AbstractEventLoop) -> Mailbox:
    """The loop's one mailbox (call on the loop's thread)."""
    box = _MAILBOXES.get(loop)
    if box is None:
        box = _MAILBOXES[loop] = Mailbox(loop)
    return box


class EventStream:
    """One request's events, delivered from any thread onto the event loop that reads them.

    Pieces that wait together are read as one: a reader that falls behind the engine (a busy event
    loop, a slow client) gets the text decoded since its last read in one event, so a busy server
    writes one chunk, not one per token, and catches up instead of falling further behind."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._mailbox = mailbox(loop)
        self._queue: asyncio.Queue = asyncio.Queue()
        self.job: Job | None = None
        self._ended = False
        self._held: list = []  # an event (or the cancel mark, None) read while joining pieces: next out

    def emit(self, event: Event) -> None:
        self._mailbox.post(self._queue, event)

    def cancel(self) -> None:
        """Free the request's row; the reader's loop ends. Call on the event loop."""
        if self.job is not None:
            self.job.cancel()
        if not self._ended:
            self._queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[Event]:
        while not self._ended:
            event = self._held.pop() if self._held else await self._queue.get()
            if isinstance(event, Piece):
                event = self._join(event)
            if event is None or isinstance(event, (Done, Failed)):
                self._ended = True
            if event is not None:
                yield event

    def _join(self, first: Piece) -> Piece:
        """``first`` and the pieces queued right behind it, as one piece."""
        texts = [first.text]
        while not self._queue.empty():
            event = self._queue.get_nowait()
            if not isinstance(event, Piece):
                self._held.append(event)
                break
            texts.append(event.text)
        return first if len(texts) == 1 else Piece("".join(texts))


@dataclass
class Started:
    plan: Plan
    events: AsyncIterator[Event]
    cancel: Callable[[], None]


def deadline_of(spec: RequestSpec, timeout_s: float) -> float:
    return spec.arrived + timeout_s


async def within(spec: RequestSpec, timeout_s: float, awaitable):
    """``awaitable``'s result, or 504 once the request's time is up (routing or loading a state can
    hang on an unreachable Chroma server)."""
    try:
        return await asyncio.wait_for(awaitable, max(0.0, deadline_of(spec, timeout_s) - time.monotonic()))
    except asyncio.TimeoutError:
        raise timed_out("the request ran past the server's time limit while routing or loading states") from None


class Planner:
    """Plans requests on its own thread, in batches: text-routed queries that wait together are
    embedded in one call (``Router.route_many``); pinned and other requests are planned one by one."""

    def __init__(self, soup: SkillSoup, max_batch: int = 32):
        self.soup = soup
        self.max_batch = max_batch
        self.batches = 0
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="skillsoup-planner", daemon=True)
        self._thread.start()

    def plan(self, spec: RequestSpec) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._queue.put((spec, future))
        return future

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(5)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                batch.append(more)
            self.batches += 1
            try:
                self._plan_batch(batch)
            except Exception as exc:  # the thread must live on: whoever waits hears why
                log.exception("planning a batch failed")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)

    def _plan_batch(self, batch: list) -> None:
        routed: dict[int | None, list] = defaultdict(list)
        for spec, future in batch:
            if spec.skills is None and spec.routing and spec.router == "text":
                routed[spec.top_k].append((spec, future))
            else:
                _settle(future, partial(self.soup.plan, spec.query, skills=spec.skills, routing=spec.routing,
                                        router=spec.router, top_k=spec.top_k))
        for top_k, items in routed.items():
            t0 = time.perf_counter()
            try:
                results = self.soup.router.route_many([s.query for s, _ in items], top_k=top_k)
            except Exception as exc:  # the batch failed together: each request hears why
                for _, future in items:
                    future.set_exception(exc)
                continue
            ms = (time.perf_counter() - t0) * 1000
            for (spec, future), matches in zip(items, results):
                future.set_result(Plan(spec.query, tuple(matches), False, ms))


def _settle(future: concurrent.futures.Future, fn: Callable) -> None:
    try:
        future.set_result(fn())
    except Exception as exc:
        future.set_exception(exc)


def counters(engine: Engine, soup: SkillSoup) -> dict:
    """The engine's counters and the state cache's, as /metrics reads them."""
    cache = soup.cache
    return {**engine.stats.to_dict(), "cache_hits": cache.hits, "cache_misses": cache.misses,
            "cache_bytes": cache.nbytes, "cache_states": len(cache)}


def prepare_call(soup: SkillSoup, plan: Plan, options: dict) -> Callable[[], Prepared]:
    """``soup.prepare`` of a plan with a request's ``RequestSpec.prepare_options()``."""
    return partial(soup.prepare, plan, mix=options["mix"], kv=options["kv"], layers=options["layers"],
                   stop=tuple(options["stop"]), **options["sampling"])


class LocalBackend:
    """The model, its engine and the registry in this process."""

    def __init__(self, soup: SkillSoup, config: EngineConfig | None = None, max_queue: int = 64,
                 timeout_s: float = 60.0):
        self.soup = soup
        self.engine = Engine(soup.model, config).start()
        self.planner = Planner(soup, self.engine.config.max_batch)
        self.admission = Admission(self.engine.config.max_batch + max_queue)
        self.timeout_s = timeout_s
        self._preparer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="skillsoup-prepare")

    async def start(self, spec: RequestSpec, restartable: bool = False) -> Started:
        loop = asyncio.get_running_loop()
        plan = await within(spec, self.timeout_s, asyncio.wrap_future(self.planner.plan(spec)))
        prepare = prepare_call(self.soup, plan, spec.prepare_options())
        prepared = await within(spec, self.timeout_s, loop.run_in_executor(self._preparer, prepare))
        stream = EventStream(loop)
        stream.job = self.engine.submit(prepared, deadline_of(spec, self.timeout_s), stream.emit)
        return Started(plan, aiter(stream), stream.cancel)

    async def run_blocking(self, fn: Callable):
        """Registry work (listing, adding, removing skills) off the event loop, in line with preparing."""
        return await asyncio.get_running_loop().run_in_executor(self._preparer, fn)

    async def skill_names(self) -> list[str]:
        return await self.run_blocking(self.soup.registry.names)

    async def add_skills(self, skills: list, replace: bool) -> list:
        return await self.run_blocking(partial(self.soup.registry.add, skills, self.soup.model, replace=replace))

    async def remove_skill(self, name: str) -> list[str]:
        return await self.run_blocking(partial(self.soup.registry.remove, name))

    def snapshot(self) -> dict:
        """Engine counters and state-cache counters, for /metrics and /health."""
        return {**counters(self.engine, self.soup), "replicas": 1, "healthy": self.engine.running}

    def describe(self) -> dict:
        return {"model": self.soup.model.source, "arch": self.soup.model.arch, "backend": "local"}

    async def close(self) -> None:  # idempotent
        self.engine.stop()
        self.planner.close()
        self._preparer.shutdown(wait=False, cancel_futures=True)
