"""The batching engine without HTTP: rows with their own states give the answers SkillSoup gives one
at a time (greedy and seeded sampling, every prefill mode), rows that cannot be stacked step apart,
and cancelled, expired, failed and stopped requests leave the batch."""

from __future__ import annotations

import dataclasses
import threading
import time

import pytest
from serve_helpers import QUERIES

from skillsoup import SkillSoup
from skillsoup.errors import StateMismatchError
from skillsoup.registry import SkillRegistry
from skillsoup.serve.engine import Engine, EngineConfig
from skillsoup.serve.events import Done, Failed, Piece, event_dict, event_from_dict
from skillsoup.states.state import SkillState

FAR = 600.0  # seconds: no deadline in sight


class Collector:
    """Events of several requests, by index, and a way to wait for all of them to end."""

    def __init__(self, n: int):
        self.events = [[] for _ in range(n)]
        self._left = n
        self._all = threading.Event()
        self._lock = threading.Lock()

    def emit(self, i: int):
        def emit(event):
            self.events[i].append(event)
            if isinstance(event, (Done, Failed)):
                with self._lock:
                    self._left -= 1
                    if self._left == 0:
                        self._all.set()
        return emit

    def wait(self, timeout: float = 120) -> None:
        assert self._all.wait(timeout), "requests did not finish"

    def text(self, i: int) -> str:
        return "".join(e.text for e in self.events[i] if isinstance(e, Piece))

    def end(self, i: int):
        return self.events[i][-1]


@pytest.fixture(scope="module")
def demo_soup(demo_registry_template, demo_model):
    soup = SkillSoup(SkillRegistry.open(demo_registry_template), demo_model, owns_registry=True)
    yield soup
    soup.close()


@pytest.fixture(scope="module")
def tiny_soup(tiny_registry_template, tiny_model):
    soup = SkillSoup(SkillRegistry.open(tiny_registry_template), tiny_model, owns_registry=True)
    yield soup
    soup.close()


def run_together(soup, requests: list[dict], **config):
    """Submit every request at once; (collector, engine stats)."""
    prepared = [soup.prepare(soup.plan(r["query"], **r.get("plan", {})), **r.get("options", {})) for r in requests]
    engine = Engine(soup.model, EngineConfig(**config))
    got = Collector(len(prepared))
    for i, p in enumerate(prepared):
        engine.submit(p, time.monotonic() + FAR, got.emit(i))
    engine.start()
    try:
        got.wait()
    finally:
        engine.stop()
    return got, engine.stats


DEMO_REQUESTS = [{"query": q} for q in QUERIES] + [
    {"query": "US date for 2023-11-05", "plan": {"routing": False}},
    {"query": "hello world", "plan": {"skills": {"upper-case": 2, "sentiment": 1}}},
    {"query": "how many words: the cat sat on the mat"},
]


@pytest.mark.parametrize("prefill", ["parallel", "steps", "auto"])
def test_a_batch_of_different_states_answers_as_one_at_a_time(demo_soup, prefill):
    got, stats = run_together(demo_soup, DEMO_REQUESTS, prefill=prefill)
    for i, r in enumerate(DEMO_REQUESTS):
        alone = demo_soup.answer(r["query"], **r.get("plan", {}))
        done = got.end(i)
        assert isinstance(done, Done) and got.text(i) == alone.text, r
        assert done.completion_tokens == alone.timings.n_tokens and done.reason == "stop"
    assert len({got.text(i) for i in range(len(DEMO_REQUESTS))}) >= 6  # the states really differ
    assert stats.row_steps > stats.steps  # rows were decoded together
    # a recurrent-only model reads padded batches exactly: auto reads every prompt in parallel
    counted = stats.step_prefills if prefill == "steps" else stats.parallel_prefills
    assert counted == len(DEMO_REQUESTS)


def test_seeded_sampling_in_a_batch_equals_one_at_a_time(tiny_soup):
    requests = [{"query": q, "options": {"temperature": 1.0, "seed": s, "max_new_tokens": 24}}
                for s, q in enumerate(["set the alarm for ten minutes", "convert miles to kilometers", "weather rain",
                                       "reverse these letters", "add plus multiply"])]
    got, _ = run_together(tiny_soup, requests, prefill="steps")
    texts = []
    for i, r in enumerate(requests):
        alone = tiny_soup.answer(r["query"], temperature=1.0, seed=r["options"]["seed"], max_new_tokens=24)
        assert got.text(i) == alone.text
        texts.append(alone.text)
    assert len(set(texts)) == len(texts)


def test_rows_that_cannot_be_stacked_step_in_separate_groups(demo_soup, monkeypatch):
    """As for attention caches of different lengths: cat refuses, the engine keeps two groups."""
    real_cat = SkillState.cat

    def picky_cat(states):
        if len({s.meta.get("kind") for s in states}) > 1:
            raise StateMismatchError("rows of different kinds")
        return real_cat(states)

    monkeypatch.setattr(SkillState, "cat", staticmethod(picky_cat))
    queries = list(QUERIES)
    prepared = []
    for i, q in enumerate(queries):
        p = demo_soup.prepare(demo_soup.plan(q))
        p = dataclasses.replace(p, state=p.state.clone())  # prepare's state is the cache's: tag a copy
        p.state.meta["kind"] = str(i % 2)
        prepared.append(p)
    engine = Engine(demo_soup.model, EngineConfig(prefill="steps"))
    groups = []
    real_step = demo_soup.model.step_
    monkeypatch.setattr(demo_soup.model, "step_", lambda t, s: (groups.append(engine.stats.groups), real_step(t, s))[1])
    got = Collector(len(prepared))
    for i, p in enumerate(prepared):
        engine.submit(p, time.monotonic() + FAR, got.emit(i))
    engine.start()
    got.wait()
    engine.stop()
    assert max(groups) == 2
    for i, q in enumerate(queries):
        assert got.text(i) == demo_soup.answer(q).text


def _one(soup, query="hello", **options):
    return soup.prepare(soup.plan(query, routing=False), **options)


@pytest.fixture
def slow_steps(tiny_soup, monkeypatch):
    """Decode steps of 2 ms or more: a 4,000-token request outlives what these tests wait for (a
    cancel, a deadline, a stop) however fast the kernels are."""
    fast_step = tiny_soup.model.step_

    def slow_step(tokens, state):
        time.sleep(0.002)
        return fast_step(tokens, state)

    monkeypatch.setattr(tiny_soup.model, "step_", slow_step)


def test_cancel_frees_the_row(tiny_soup, slow_steps):
    engine = Engine(tiny_soup.model).start()
    got = Collector(1)
    job = engine.submit(_one(tiny_soup, max_new_tokens=4000), time.monotonic() + FAR, got.emit(0))
    deadline = time.monotonic() + 30
    while not got.events[0]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    job.cancel()
    while engine.stats.rows:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    engine.stop()
    assert engine.stats.cancelled == 1 and engine.stats.tokens < 4000
    assert not any(isinstance(e, (Done, Failed)) for e in got.events[0])  # a cancelled request hears nothing more


def test_past_the_deadline_a_request_times_out(tiny_soup, slow_steps):
    engine = Engine(tiny_soup.model).start()
    got = Collector(2)
    engine.submit(_one(tiny_soup, max_new_tokens=4000), time.monotonic() + 0.3, got.emit(0))
    engine.submit(_one(tiny_soup), time.monotonic() - 1, got.emit(1))  # already late while waiting
    got.wait()
    engine.stop()
    assert [got.end(i).code for i in (0, 1)] == ["timeout", "timeout"]
    assert engine.stats.timed_out == 2 and engine.stats.rows == 0


def test_zero_new_tokens_and_a_failing_step(tiny_soup, monkeypatch):
    engine = Engine(tiny_soup.model).start()
    got = Collector(1)
    engine.submit(_one(tiny_soup, max_new_tokens=0), time.monotonic() + FAR, got.emit(0))
    got.wait()
    assert got.end(0) == Done("length", got.end(0).prompt_tokens, 0, got.end(0).timings)

    def broken(tokens, state):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(tiny_soup.model, "step_", broken)
    got = Collector(1)
    engine.submit(_one(tiny_soup), time.monotonic() + FAR, got.emit(0))
    got.wait()
    assert got.end(0).code == "server_error" and "out of memory" in got.end(0).message
    monkeypatch.undo()
    got = Collector(1)
    engine.submit(_one(tiny_soup, max_new_tokens=3), time.monotonic() + FAR, got.emit(0))
    got.wait()  # the engine survived
    engine.stop()
    assert got.end(0).completion_tokens == 3


def test_stop_fails_what_is_left(tiny_soup, slow_steps):
    engine = Engine(tiny_soup.model, EngineConfig(max_batch=1)).start()
    got = Collector(2)
    for i in range(2):
        engine.submit(_one(tiny_soup, max_new_tokens=4000), time.monotonic() + FAR, got.emit(i))
    time.sleep(0.2)
    engine.stop()
    got.wait(10)
    assert [got.end(i).code for i in (0, 1)] == ["server_error", "server_error"]


def test_events_travel_as_plain_dicts():
    for event in (Piece("x"), Done("stop", 3, 4, {"total_ms": 1.0}, {"replica": "r1"}), Failed("timeout", "late")):
        assert event_from_dict(event_dict(event)) == event


def test_a_hybrid_model_batches_rows_with_different_kv_lengths(tmp_path, hybrid_model):
    """A tiny Jamba (attention KV that grows with the demonstrations): rows whose states hold KV of
    different lengths (one skill, two skills concatenated, none) decode together and answer as
    SkillSoup does one at a time."""
    from skillsoup.skills.skill import Demonstration, Skill

    words = ("cat", "lamp", "stone", "river", "cloud")
    skills = [Skill(name, name, tuple(Demonstration(w, f(w)) for w in words[:n]))
              for name, f, n in (("upper", str.upper, 5), ("reverse", lambda w: w[::-1], 2))]
    with SkillRegistry.open(tmp_path / "reg", embedder="hash:64") as reg:
        reg.add(skills, hybrid_model)
        soup = SkillSoup(reg, hybrid_model)
        requests = [{"query": "apple", "plan": {"skills": {"upper": 1}}},
                    {"query": "tree", "plan": {"skills": {"reverse": 1}}},
                    {"query": "sun", "plan": {"skills": {"upper": 2, "reverse": 1}}, "options": {"kv": "concat"}},
                    {"query": "moon", "plan": {"routing": False}}]
        for r in requests:
            r.setdefault("options", {})["max_new_tokens"] = 6
        for prefill in ("steps", "parallel"):
            got, stats = run_together(soup, requests, prefill=prefill)
            for i, r in enumerate(requests):
                alone = soup.answer(r["query"], **r["plan"], **r["options"])
                assert isinstance(got.end(i), Done) and got.text(i) == alone.text, (prefill, r)
            assert stats.failed == 0 and stats.row_steps > stats.steps
            assert len({got.text(i) for i in range(len(requests))}) > 1  # the states really differ


# ---- the prefill budget (serve/scheduling.py) -------------------------------------------------------
def test_prefill_budget_decides_how_many_prompts_one_pass_reads():
    from skillsoup.serve.scheduling import PASS_STEPS, PrefillBudget

    budget = PrefillBudget(pass_ms=50.0)
    assert budget.fits(1, 10_000) and not budget.fits(2, 1)  # nothing measured: one prompt, to measure
    budget.measured_pass(1, 100, 5000.0)  # the cold first pass is no measurement
    assert not budget.fits(2, 1)
    budget.measured_pass(1, 100, 100.0)  # 1 ms per padded token
    assert budget.fits(2, 25) and not budget.fits(2, 26)  # 50 ms of work
    budget.measured_step(40.0)  # slow steps: a pass may take PASS_STEPS of them
    assert budget.fits(PASS_STEPS * 40 // 20, 20) and not budget.fits(PASS_STEPS * 40 // 20 + 1, 20)
    assert PrefillBudget(pass_ms=0).fits(1000, 1000)  # 0: no cap
    with pytest.raises(ValueError, match="prefill_pass_ms"):
        EngineConfig(prefill_pass_ms=-1)


BURST = ["set the alarm for ten minutes", "convert miles to kilometers", "weather rain", "reverse these letters",
         "add plus multiply", "hello there"]


@pytest.mark.parametrize("pass_ms", [10.0, 0.0], ids=["budget", "no-cap"])
def test_a_burst_is_read_over_several_passes_while_a_running_answer_streams(tiny_soup, slow_steps, monkeypatch,
                                                                              pass_ms):
    """Prompt passes slowed to 50 ms per prompt (a large model's): with a budget of 10 ms (or 8 decode
    steps) the burst is read one prompt per pass, with decode steps between, so the running answer
    keeps streaming and early requests get their first token before later prompts are read. Without
    a cap, one pass reads the whole burst. The answers are the one-at-a-time answers either way."""
    model = tiny_soup.model
    real_many, real_one = model.capture_many, model.capture
    monkeypatch.setattr(model, "capture_many", lambda p, s: (time.sleep(0.05 * len(p)), real_many(p, s))[1])
    monkeypatch.setattr(model, "capture", lambda p, s=None: (time.sleep(0.05), real_one(p, s))[1])
    order, lock = [], threading.Lock()
    got = Collector(1 + len(BURST))

    def emit(i):
        inner = got.emit(i)

        def both(event):
            with lock:
                order.append((i, type(event).__name__))
            inner(event)
        return both

    engine = Engine(model, EngineConfig(prefill_pass_ms=pass_ms)).start()
    try:
        engine.submit(_one(tiny_soup, max_new_tokens=400), time.monotonic() + FAR, emit(0))
        deadline = time.monotonic() + 30
        while not got.events[0]:  # the long answer is streaming
            assert time.monotonic() < deadline
            time.sleep(0.005)
        passes_before = engine.stats.prefill_passes
        with engine._cv:  # the whole burst arrives in one moment (submit takes the same reentrant lock)
            for i, q in enumerate(BURST, start=1):
                engine.submit(_one(tiny_soup, q, max_new_tokens=5), time.monotonic() + FAR, emit(i))
        got.wait()
    finally:
        engine.stop()
    burst_passes = engine.stats.prefill_passes - passes_before
    firsts = [order.index((i, "Piece")) for i in range(1, 1 + len(BURST))]
    streamed_between = [k for k, (i, _) in enumerate(order) if i == 0 and min(firsts) < k < max(firsts)]
    if pass_ms:
        assert burst_passes >= len(BURST) // 2 and streamed_between
    else:
        assert burst_passes == 1 and not streamed_between
    for i, q in enumerate(BURST, start=1):
        assert got.text(i) == tiny_soup.answer(q, routing=False, max_new_tokens=5).text
