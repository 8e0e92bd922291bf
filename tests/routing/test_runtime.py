"""SkillSoup: routed and pinned skills, the top skill's template, mixing mode passed through,
streaming, timings, the state cache, and bad options."""

from __future__ import annotations

import math

import pytest
import torch

import skillsoup.runtime as runtime
from skillsoup.errors import GenerationError, MixError, RoutingError
from skillsoup.registry import capture_skill
from skillsoup.routing.router import Router, RouterParams
from skillsoup.runtime import Answer, SkillSoup
from skillsoup.skills.skill import Demonstration, Skill
from skillsoup.states.bank import StateBank
from skillsoup.states.cache import StateCache
from skillsoup.states.state import SkillState

QUERY = "please set the alarm countdown for ten minutes"


@pytest.fixture
def soup(syn_registry, tiny_model):
    return SkillSoup(syn_registry, tiny_model, router=Router(syn_registry, tiny_model, RouterParams(threshold=0.0)))


@pytest.fixture
def encoded(monkeypatch, tiny_model):
    """The texts the model is asked to encode, in order."""
    seen: list[str] = []
    real = tiny_model.encode

    def spy(text):
        seen.append(text)
        return real(text)

    monkeypatch.setattr(tiny_model, "encode", spy)
    return seen


def test_answer_equals_reading_the_demonstrations_in_the_prompt(soup, tiny_model):
    soup.router.params = soup.router.params.replace(top_k=1)
    answer = soup.answer(QUERY, max_new_tokens=12)
    assert [m.name for m in answer.matches] == ["timer"] and answer.matches[0].weight == 1.0
    skill = soup.registry.get("timer")
    bos = tiny_model.tokenizer.bos_token_id
    full_prompt = [bos] + tiny_model.encode(skill.render_demonstrations() + skill.render_query(QUERY))
    expected = "".join(tiny_model.generate(full_prompt, None, stop=skill.stop_strings(), max_new_tokens=12))
    assert answer.text == expected
    assert not answer.pinned and not answer.stopped


def test_the_top_weighted_skill_renders_the_query_and_sets_the_stop(syn_registry, tiny_model, encoded):
    qa = Skill("qa", "question answering", (Demonstration("why", "because"),), template="Q: {input}\nA: {output}\n\n")
    syn_registry.add([qa], tiny_model)
    soup = SkillSoup(syn_registry, tiny_model)
    encoded.clear()
    answer = soup.answer("why not", skills={"timer": 1.0, "qa": 3.0}, max_new_tokens=3)
    assert encoded[-1] == "Q: why not\nA:"
    assert [m.name for m in answer.matches] == ["qa", "timer"]
    soup.answer("why not", routing=False, max_new_tokens=3)
    assert encoded[-1] == "Input: why not\nOutput:"  # no skill: the default template


def test_stop_strings_end_the_answer(syn_registry, tiny_model, monkeypatch):
    """A model that would write 'ab END Q: x' answers 'ab' when the skill's outputs end with ' END'."""
    marked = Skill("marked", "answers end with END", (Demonstration("a", "b"),), template="Q: {input}\nA: {output} END\n")
    syn_registry.add([marked], tiny_model)
    ids = tiny_model.encode("ab END Q: x")
    monkeypatch.setattr(tiny_model, "generate_ids", lambda *a, **k: iter(ids))
    soup = SkillSoup(syn_registry, tiny_model)
    assert soup.answer("q", skills=["marked"]).text == "ab"
    pieces = list(soup.stream("q", skills=["marked"]))
    assert "".join(pieces) == "ab" and all("E" not in p for p in pieces)  # held back, never shown


def test_pinned_skills_skip_routing_and_are_normalised(soup, monkeypatch):
    monkeypatch.setattr(soup.router, "route", lambda *a, **k: pytest.fail("routing must not run for pinned skills"))
    answer = soup.answer(QUERY, skills={"math": 1.0, "timer": 3.0}, max_new_tokens=2)
    assert answer.pinned and [(m.name, m.weight) for m in answer.matches] == [("timer", 0.75), ("math", 0.25)]
    assert answer.timings.route_ms == 0.0
    listed = soup.answer(QUERY, skills=["math", "dates"], max_new_tokens=2)
    assert [m.weight for m in listed.matches] == [0.5, 0.5]


@pytest.mark.parametrize(("skills", "message"), [
    ({"nosuch": 1.0}, "unknown skill 'nosuch'"),
    (["timer", "nosuch"], "unknown skill 'nosuch'"),
    ({"timer": 0.0}, "finite number > 0"),
    ({"timer": float("nan")}, "finite number > 0"),
    ({"timer": "high"}, "finite number > 0"),
    (["timer", "timer"], "pinned twice"),
    ([], "no skills given"),
    ("timer", "not one string"),
])
def test_bad_pins(soup, skills, message):
    with pytest.raises(RoutingError, match=message):
        soup.answer(QUERY, skills=skills)


@pytest.mark.parametrize("mode", ["mix", "top"])
def test_mixing_mode_is_passed_through(soup, monkeypatch, mode):
    calls = []
    real = runtime.mix

    def spy(states, weights, conv="mix", **kw):
        calls.append((len(states), list(weights), conv))
        return real(states, weights, conv=conv, **kw)

    monkeypatch.setattr(runtime, "mix", spy)
    soup.answer(QUERY, skills={"timer": 2.0, "math": 1.0}, mix=mode, max_new_tokens=2)
    assert calls == [(2, [pytest.approx(2 / 3), pytest.approx(1 / 3)], mode)]
    with pytest.raises(MixError, match="choose one of mix, top"):
        soup.answer(QUERY, mix="average")


def test_layers_choose_which_layers_are_mixed(soup, monkeypatch, tiny_model):
    """layers="0" mixes layer 0 only; the other layers come whole from the top-weighted skill."""
    got = []
    real = runtime.mix
    monkeypatch.setattr(runtime, "mix", lambda *a, **kw: got.append(real(*a, **kw)) or got[-1])
    soup.answer(QUERY, skills={"timer": 2.0, "math": 1.0}, layers="0", max_new_tokens=2)
    mixed, top = got[-1], soup.registry.state("timer", tiny_model)
    full = real([top, soup.registry.state("math", tiny_model)], [2, 1])
    assert torch.equal(mixed.ssm[0], full.ssm[0]) and not torch.equal(mixed.ssm[0], top.ssm[0])
    for i in range(1, tiny_model.num_layers):
        assert torch.equal(mixed.ssm[i], top.ssm[i]) and torch.equal(mixed.conv[i], top.conv[i])
    with pytest.raises(MixError, match="the model has layers 0..1"):
        soup.answer(QUERY, skills={"timer": 2.0, "math": 1.0}, layers="0-5")
    with pytest.raises(MixError, match="cannot read layers"):
        soup.answer(QUERY, layers="first")


def test_no_routing_starts_from_the_neutral_state(soup, tiny_model):
    answer = soup.answer(QUERY, routing=False, max_new_tokens=6)
    assert answer.matches == () and answer.timings.route_ms == 0.0
    prompt = tiny_model.encode(runtime.DEFAULT_SKILL.render_query(QUERY))
    expected = "".join(tiny_model.generate(prompt, tiny_model.neutral_state(), stop=["\n"], max_new_tokens=6))
    assert answer.text == expected


def test_stream_yields_pieces_then_the_answer(soup):
    stream = soup.stream(QUERY, max_new_tokens=8)
    assert stream.matches and stream.matches[0].name == "timer"  # known before any text
    with pytest.raises(GenerationError, match="read to the end"):
        stream.answer
    pieces = list(stream)
    answer = stream.answer
    assert isinstance(answer, Answer) and "".join(pieces) == answer.text and answer.matches == stream.matches
    assert list(stream) == [] and stream.read() is answer


def test_closing_a_stream_stops_it(soup):
    stream = soup.stream(QUERY, max_new_tokens=50, skills=["timer"])
    it = iter(stream)
    first = next(it)
    stream.close()
    assert stream.answer.stopped and stream.answer.text == first
    assert stream.answer.timings.n_tokens < 50


def test_timings_are_filled(soup):
    t = soup.answer(QUERY, max_new_tokens=8).timings
    assert t.route_ms > 0 and t.load_mix_ms > 0 and t.prefill_ms > 0
    assert t.first_token_ms >= t.prefill_ms and 1 <= t.n_tokens <= 8
    assert (t.decode_tokens_per_s > 0) == (t.n_tokens > 1)
    assert t.total_ms >= t.route_ms + t.load_mix_ms + t.first_token_ms
    assert Answer("x", (), t).to_dict()["timings"]["n_tokens"] == t.n_tokens


def test_states_are_cached_by_name_content_and_model(soup, tiny_model, monkeypatch):
    loads = []
    real = soup.registry.state
    monkeypatch.setattr(soup.registry, "state", lambda name, model, **k: loads.append(name) or real(name, model, **k))
    soup.answer(QUERY, skills=["timer"], max_new_tokens=1)
    soup.answer(QUERY, skills=["timer"], max_new_tokens=1)
    assert loads == ["timer"] and soup.cache.hits == 1
    changed = Skill("timer", "the timer skill, changed", (Demonstration("alarm", "timer()"),))
    soup.registry.add([changed], tiny_model, replace=True)
    soup.answer(QUERY, skills=["timer"], max_new_tokens=1)
    assert loads == ["timer", "timer"]  # new content hash: loaded again
    assert torch.equal(soup.cache.get(("timer", changed.content_hash, tiny_model.fingerprint), None).ssm[0],
                       capture_skill(tiny_model, changed).ssm[0])
    assert isinstance(soup.cache, StateBank) and soup.cache.device == tiny_model.device  # the model's device


def _state(nbytes_per_layer: int) -> SkillState:
    n = nbytes_per_layer // 8  # conv and ssm, float32
    return SkillState([torch.zeros(1, n, 1)], [torch.zeros(1, n, 1)], [1], "fp", "mamba")


def test_state_cache_evicts_least_recently_used_within_its_budget():
    cache = StateCache(max_bytes=2500)
    a, b, c = _state(1000), _state(1000), _state(1000)
    cache.put(("a", "h", "fp"), a)
    cache.put(("b", "h", "fp"), b)
    assert cache.get(("a", "h", "fp"), lambda: pytest.fail("cached")) is a  # a is now the most recent
    cache.put(("c", "h", "fp"), c)
    assert ("b", "h", "fp") not in cache and ("a", "h", "fp") in cache and cache.nbytes == 2000
    big = _state(4000)
    assert cache.get(("big", "h", "fp"), lambda: big) is big and ("big", "h", "fp") not in cache
    assert cache.nbytes == 2000 and len(cache) == 2


@pytest.mark.parametrize(("options", "message"), [
    ({"max_new_tokens": -1}, "max_new_tokens"), ({"max_new_tokens": 10**6}, "max_new_tokens"),
    ({"temperature": -0.5}, "temperature"), ({"temperature": math.inf}, "temperature"),
    ({"top_p": 0}, "top_p"), ({"seed": "x"}, "seed"),
])
def test_bad_generation_options_fail_before_routing(soup, options, message, monkeypatch):
    monkeypatch.setattr(soup.router, "route", lambda *a, **k: pytest.fail("validated first"))
    with pytest.raises(GenerationError, match=message):
        soup.answer(QUERY, **options)


def test_bad_queries(soup):
    with pytest.raises(RoutingError, match="empty"):
        soup.answer("   ")
    with pytest.raises(RoutingError, match="limit is 4,000"):
        soup.answer("x" * 1_000_000)


def test_open_from_paths(syn_registry, mamba_dir):
    path = syn_registry.path
    syn_registry.close()
    with SkillSoup.open(registry=path, model=mamba_dir) as soup:
        assert soup.registry.path == path and soup.model.fingerprint
        assert soup.answer(QUERY, max_new_tokens=2).matches
