"""SkillSoup.plan and SkillSoup.prepare (what a batching server calls instead of stream), and
Router.route_many (a batch of queries embedded at once)."""

from __future__ import annotations

import pytest

from skillsoup.errors import GenerationError, RoutingError, UnknownSkillError
from skillsoup.models.generation import generate_text
from skillsoup.routing.router import Router, RouterParams
from skillsoup.runtime import Plan, SkillSoup
from skillsoup.states.state import relative_state_error

QUERIES = ["please set the alarm countdown for ten minutes", "convert miles to kilometers please",
           "will it rain tomorrow, what is the forecast", "banana guitar volcano"]


@pytest.fixture
def soup(syn_registry, tiny_model):
    return SkillSoup(syn_registry, tiny_model, router=Router(syn_registry, tiny_model, RouterParams(threshold=0.0)))


def test_plan_then_prepare_is_what_stream_decodes(soup, tiny_model):
    plan = soup.plan(QUERIES[0])
    assert plan.matches == tuple(soup.route(QUERIES[0])) and not plan.pinned and plan.route_ms > 0
    prepared = soup.prepare(plan, max_new_tokens=9)
    skill = soup.registry.get(plan.matches[0].name)
    assert list(prepared.prompt_ids) == tiny_model.encode(skill.render_query(QUERIES[0]))
    assert prepared.stop == tuple(skill.stop_strings()) and prepared.stop_ids == (tiny_model.tokenizer.eos_token_id,)
    assert relative_state_error(prepared.state, soup.state_for(plan.matches)[0]) == 0
    decoded = "".join(generate_text(tiny_model, list(prepared.prompt_ids), prepared.state, stop=list(prepared.stop),
                                    max_new_tokens=9)).lstrip(" ")
    assert decoded == soup.answer(QUERIES[0], max_new_tokens=9).text


def test_plan_pins_and_prepare_adds_stop_strings(soup):
    plan = soup.plan("x", skills={"timer": 3, "email": 1})
    assert plan.pinned and [(m.name, m.weight) for m in plan.matches] == [("timer", 0.75), ("email", 0.25)]
    assert soup.plan("x", routing=False).matches == ()
    prepared = soup.prepare(plan, stop=["STOP", "\n"], temperature=0.5, seed=3)
    assert prepared.stop == ("\n", "STOP") and prepared.sampling()["seed"] == 3
    with pytest.raises(UnknownSkillError, match="unknown skill 'nope'"):
        soup.plan("x", skills=["nope"])
    assert issubclass(UnknownSkillError, RoutingError)  # callers that caught RoutingError still do


@pytest.mark.parametrize(("options", "message"), [
    ({"mix": "blend"}, "unknown mixing mode"),
    ({"max_new_tokens": -1}, "max_new_tokens"),
    ({"layers": "7-9"}, "layer"),
    ({"stop": "\n"}, "list of non-empty strings"),
    ({"stop": [""]}, "list of non-empty strings"),
])
def test_prepare_checks_its_options(soup, options, message):
    with pytest.raises((GenerationError, RoutingError, Exception), match=message):
        soup.prepare(soup.plan("x", routing=False), **options)


def test_a_soup_without_a_model_only_plans(syn_registry):
    planner = SkillSoup(syn_registry, None)
    plan = planner.plan(QUERIES[1])
    assert plan.matches and plan.matches[0].name == "convert"
    with pytest.raises(GenerationError, match="only plans"):
        planner.prepare(plan)


def test_plans_travel_as_plain_values(soup):
    plan = soup.plan(QUERIES[0])
    assert Plan.from_dict(plan.to_dict()) == plan


def test_route_many_equals_route_one_by_one(soup):
    many = soup.router.route_many(QUERIES, top_k=2)
    for query, routed in zip(QUERIES, many):
        alone = soup.router.route(query, top_k=2)
        assert [m.name for m in routed] == [m.name for m in alone]
        assert [m.weight for m in routed] == pytest.approx([m.weight for m in alone], abs=1e-5)
    assert soup.router.route_many([]) == []
    with pytest.raises(RoutingError, match="empty"):
        soup.router.route_many(["fine", "  "])


def test_route_time_leaves_out_the_embedders_first_load(soup, monkeypatch):
    import time

    embedder = soup.registry.embedder
    loads = []

    def slow_load():  # what a sentence-transformers model costs on first use (seconds); here 0.5 s
        if not loads:
            time.sleep(0.5)
        loads.append(1)

    monkeypatch.setattr(embedder, "load", slow_load, raising=False)
    plan = soup.plan(QUERIES[1])
    assert loads and plan.route_ms < 500, plan.route_ms
    assert soup.plan(QUERIES[1], skills=["timer"]).route_ms == 0.0
