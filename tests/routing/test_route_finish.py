"""The last step of every route (skillsoup/routing/matches.py): skills whose weight is zero are
neither mixed nor listed; a composite routed with its own sources takes their weight, so the mix
counts no source twice and a route of a composite and its sources injects the composite's stored
state exactly."""

from __future__ import annotations

import numpy as np
import pytest

from skillsoup.routing.matches import SkillMatch, composite_sources, finish, weight_text
from skillsoup.routing.router import Router, RouterParams
from skillsoup.runtime import SkillSoup
from skillsoup.states.state import relative_state_error

QUERY = "please set the alarm countdown for ten minutes and email the contact"


def _sources(table: dict[str, set[str]]):
    return lambda names: {n: frozenset(table[n]) for n in names if n in table}


def _m(name: str, weight: float, score: float = 0.5) -> SkillMatch:
    return SkillMatch(name, score, weight)


# ---- finish, on its own --------------------------------------------------------------------------
def test_zero_weights_are_dropped_tiny_ones_kept():
    out = finish([_m("a", 0.7), _m("b", 0.3), _m("c", 0.0), _m("d", 1e-50), _m("e", 1e-9)], _sources({}))
    assert [m.name for m in out] == ["a", "b", "e"]  # 1e-50 is zero in float32, the precision states mix in
    assert sum(m.weight for m in out) == pytest.approx(1.0) and out[2].weight > 0


def test_sources_fold_into_their_composite():
    route = [_m("date-us", 0.45, 0.62), _m("blend", 0.40, 0.61), _m("date-long", 0.10), _m("upper", 0.05)]
    out = finish(route, _sources({"blend": {"upper", "date-us"}}))
    assert [(m.name, m.weight, m.folded) for m in out] == [
        ("blend", pytest.approx(0.90), ("date-us", "upper")), ("date-long", pytest.approx(0.10), ())]
    assert out[0].score == 0.61  # the composite keeps its own score; the heaviest comes first


def test_nested_shared_and_cyclic_composites():
    nested = {"outer": {"inner", "a", "b", "c"}, "inner": {"a", "b"}}
    out = finish([_m("a", 0.4), _m("inner", 0.3), _m("outer", 0.2), _m("x", 0.1)], _sources(nested))
    assert [(m.name, m.folded) for m in out] == [("outer", ("a", "inner")), ("x", ())]
    assert out[0].weight == pytest.approx(0.9)
    shared = {"c1": {"a", "b"}, "c2": {"a", "d"}}  # a source of both: the heavier composite takes it
    out = finish([_m("c1", 0.2), _m("c2", 0.3), _m("a", 0.5)], _sources(shared))
    assert [(m.name, round(m.weight, 6), m.folded) for m in out] == [("c2", 0.8, ("a",)), ("c1", 0.2, ())]
    cycle = {"c1": {"c2", "a"}, "c2": {"c1", "a"}}  # recipes that name each other: neither swallows the other
    out = finish([_m("c1", 0.5), _m("c2", 0.3), _m("a", 0.2)], _sources(cycle))
    assert [(m.name, round(m.weight, 6)) for m in out] == [("c1", 0.7), ("c2", 0.3)]


def test_weight_text():
    assert [weight_text(w) for w in (1.0, 0.25, 0.005, 0.0049, 3e-5)] == ["1.00", "0.25", "0.01", "<0.01", "<0.01"]


# ---- in the registry and the router --------------------------------------------------------------
def _add_composite(reg, model, name, parts: dict[str, float]):
    from skillsoup.registry.composite import Recipe, RecipePart
    from skillsoup.skills.skill import Skill

    recipe = Recipe(parts=tuple(RecipePart(n, reg.info(n).content_hash, reg.info(n).state_hash, w)
                                for n, w in parts.items()),
                    conv="mix", method="test", model=model.fingerprint, n_examples=4)
    demos = tuple(d for n in parts for d in reg.get(n).demonstrations[:4])
    reg.add_composite(Skill(name, f"{' and '.join(parts)} together", demos, tags=("composite",)), recipe, model)


@pytest.fixture
def with_composite(syn_registry, tiny_model):
    _add_composite(syn_registry, tiny_model, "timer-mail", {"timer": 0.7, "email": 0.3})
    return syn_registry


def test_composite_sources_read_through_nested_recipes(with_composite, tiny_model):
    _add_composite(with_composite, tiny_model, "everything", {"timer-mail": 0.5, "convert": 0.5})
    found = composite_sources(with_composite, ["everything", "timer-mail", "timer", "no-such-skill"])
    assert found == {"everything": {"timer-mail", "timer", "email", "convert"}, "timer-mail": {"timer", "email"}}


def test_route_folds_sources_and_the_injected_state_is_the_composite(with_composite, tiny_model):
    params = RouterParams(threshold=-1.0, top_k=8, temperature=0.5)  # keep every candidate
    router = Router(with_composite, tiny_model, params)
    raw_router = Router(with_composite, tiny_model, params)
    raw_router.finish = lambda matches: matches  # what the route was before its last step
    raw = {m.name: m.weight for m in raw_router.route(QUERY)}
    assert {"timer-mail", "timer", "email"} <= set(raw)  # the double count this guards against
    routed = router.route(QUERY)
    names = [m.name for m in routed]
    assert "timer" not in names and "email" not in names and sum(m.weight for m in routed) == pytest.approx(1.0)
    composite = next(m for m in routed if m.name == "timer-mail")
    assert composite.weight == pytest.approx(raw["timer-mail"] + raw["timer"] + raw["email"])
    assert sorted(composite.folded) == ["email", "timer"]
    for m in routed:  # every other skill keeps the weight the router gave it
        assert m is composite or m.weight == pytest.approx(raw[m.name])
    assert [m.weight for m in routed] == sorted((m.weight for m in routed), reverse=True)

    soup = SkillSoup(with_composite, tiny_model, router=router)
    alone = router.finish([SkillMatch("timer", 0.9, 0.5), SkillMatch("timer-mail", 0.8, 0.3),
                           SkillMatch("email", 0.7, 0.2)])
    assert [(m.name, m.weight) for m in alone] == [("timer-mail", 1.0)]
    stored = with_composite.state("timer-mail", tiny_model, recompute=False)
    assert relative_state_error(soup.state_for(alone)[0], stored) == 0  # exactly the searched mix
    double = soup.state_for([SkillMatch("timer", 0.9, 0.5), SkillMatch("timer-mail", 0.8, 0.3),
                             SkillMatch("email", 0.7, 0.2)])[0]
    assert relative_state_error(double, stored) > 1e-3  # what routing injected before
    pinned = soup.plan(QUERY, skills={"timer": 1, "timer-mail": 1})  # pins are the user's own mix: untouched
    assert [m.name for m in pinned.matches] == ["timer", "timer-mail"]


def test_a_zero_weight_is_neither_mixed_nor_listed(syn_registry, tiny_model):
    params = RouterParams(threshold=-1.0, top_k=8, temperature=1e-6)  # the softmax underflows to 0
    raw_router = Router(syn_registry, tiny_model, params)
    raw_router.finish = lambda matches: matches
    raw = raw_router.route(QUERY)
    assert len(raw) > 1 and any(np.float32(m.weight) == 0 for m in raw)
    soup = SkillSoup(syn_registry, tiny_model, router=Router(syn_registry, tiny_model, params))
    plan = soup.plan(QUERY)
    assert [m.name for m in plan.matches] == [m.name for m in raw if np.float32(m.weight) > 0]
    assert all(np.float32(m.weight) > 0 for m in plan.matches)
    assert [m.name for m in soup.answer(QUERY, max_new_tokens=2).matches] == [m.name for m in plan.matches]
