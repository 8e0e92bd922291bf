"""Text routing: the aggregation policies, thresholds, top-k and weights, parameters stored in the
registry, the fast index search, and bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from registry_helpers import make_skill

from skillsoup.errors import RoutingError
from skillsoup.routing.policies import FEATURES, POLICIES, SIMILARITY_POLICIES, best_first
from skillsoup.routing.router import PolicyError, Retrieval, Router, RouterParams, SkillMatch

TIMER_QUERY = "please set the alarm countdown for ten minutes"

# a retrieval where the policies disagree: "a" has one very close demonstration, "b" many good ones
SPLIT = Retrieval(
    demo_hits=(("a", 0.9), ("b", 0.8), ("b", 0.79), ("b", 0.78), ("a", 0.1)),
    skill_hits=(("b", 0.7), ("a", 0.2)),
)


def _logistic_on(feature: str) -> dict:
    """A hand-made logistic model that only looks at one feature."""
    coef = [0.0] * len(FEATURES)
    coef[FEATURES.index(feature)] = 4.0
    return {"features": list(FEATURES), "mean": [0.0] * len(FEATURES), "scale": [0.1] * len(FEATURES),
            "coef": coef, "bias": 0.0}


@pytest.mark.parametrize("policy", [*SIMILARITY_POLICIES, "logistic"])
def test_each_policy_routes_a_clear_query_to_its_skill(syn_registry, policy):
    params = RouterParams(policy=policy, threshold=0.0, logistic=_logistic_on("max") if policy == "logistic" else None)
    matches = Router(syn_registry, params=params).route(TIMER_QUERY)
    assert matches and matches[0].name == "timer"


@pytest.mark.parametrize(("policy", "first", "scores"), [
    ("max", "a", {"a": 0.9, "b": 0.8}),
    ("mean_topk", "b", {"a": (0.9 + 0.1 + 0.1) / 3, "b": (0.8 + 0.79 + 0.78) / 3}),  # missing = the floor 0.1
    ("skill_row", "b", {"a": 0.2, "b": 0.7}),
    ("max_skill_row", "b", {"a": 0.55, "b": 0.75}),
])
def test_policies_aggregate_as_documented(syn_registry, policy, first, scores):
    router = Router(syn_registry, params=RouterParams(policy=policy, threshold=-1.0, top_k=2))
    matches = router.decide(SPLIT)
    assert [m.name for m in matches][0] == first
    assert {m.name: round(m.score, 6) for m in matches} == {k: round(v, 6) for k, v in scores.items()}


def test_logistic_policy_gives_probabilities_from_its_coefficients(syn_registry):
    router = Router(syn_registry, params=RouterParams(policy="logistic", threshold=0.0, logistic=_logistic_on("skill_row")))
    cands, scores = router.scores(SPLIT)
    expected = {"a": 1 / (1 + math.exp(-4 * 0.2 / 0.1)), "b": 1 / (1 + math.exp(-4 * 0.7 / 0.1))}
    assert dict(zip(cands.names, np.round(scores, 9))) == {k: round(v, 9) for k, v in expected.items()}


def test_unknown_policy_is_a_typed_error_listing_the_valid_ones(syn_registry):
    with pytest.raises(PolicyError) as err:
        RouterParams(policy="median")
    assert "median" in str(err.value) and all(p in str(err.value) for p in POLICIES)
    assert isinstance(err.value, RoutingError)
    with pytest.raises(PolicyError, match="valid policies"):
        Router(syn_registry, params={"policy": "centroid"})
    with pytest.raises(PolicyError, match="skillsoup fit"):
        RouterParams(policy="logistic")  # no coefficients yet


def test_abstains_when_no_skill_passes_its_threshold(syn_registry):
    router = Router(syn_registry, params=RouterParams(threshold=0.99))
    assert router.route(TIMER_QUERY) == []
    assert Router(syn_registry).route("zebra xylophone quartz") == []  # default threshold, nothing close


def test_weights_sum_to_one_are_ordered_and_respect_top_k(syn_registry):
    router = Router(syn_registry, params=RouterParams(threshold=-1.0, temperature=0.2, n_demos=64))  # all 8 skills
    for k in (1, 2, 3, 5, 8):
        matches = router.route("convert the alarm email", top_k=k)
        assert len(matches) == k
        assert math.isclose(sum(m.weight for m in matches), 1.0, rel_tol=1e-9)
        assert [m.score for m in matches] == sorted((m.score for m in matches), reverse=True)
        assert [m.weight for m in matches] == sorted((m.weight for m in matches), reverse=True)
        assert all(isinstance(m, SkillMatch) for m in matches)


def test_lower_temperature_concentrates_the_weight(syn_registry):
    sharp = Router(syn_registry, params=RouterParams(threshold=-1.0, temperature=0.01)).route(TIMER_QUERY)
    soft = Router(syn_registry, params=RouterParams(threshold=-1.0, temperature=1.0)).route(TIMER_QUERY)
    assert sharp[0].name == soft[0].name == "timer"
    assert sharp[0].weight > 0.99 > soft[0].weight
    assert soft[0].weight < 0.5  # nearly uniform over three


def test_per_skill_threshold_overrides_the_global_one(syn_registry):
    base = RouterParams(threshold=0.0, top_k=8)
    names = [m.name for m in Router(syn_registry, params=base).route(TIMER_QUERY)]
    assert "timer" in names
    strict = base.replace(skill_thresholds={"timer": 0.999})
    after = [m.name for m in Router(syn_registry, params=strict).route(TIMER_QUERY)]
    assert "timer" not in after and after == [n for n in names if n != "timer"]


def test_parameters_are_stored_in_the_registry_and_versioned(syn_registry):
    router = Router(syn_registry)
    assert router.params == RouterParams() and router.settings_version == 0
    router.params = router.params.replace(policy="mean_topk", threshold=0.42, skill_thresholds={"timer": 0.5})
    v1 = router.save()
    again = Router(syn_registry)
    assert again.params == router.params and again.settings_version == v1
    router.params = router.params.replace(temperature=0.2)
    assert router.save() == v1 + 1
    again.reload()
    assert again.params.temperature == 0.2


def test_nearest_rows_equal_a_brute_force_search_and_skip_leftover_rows(syn_registry):
    from skillsoup.routing.index_data import index_matrices, retrieve_all

    reg = syn_registry
    # leftover demonstration rows of an unfinished replace of "timer" (another content hash)
    ghost = make_skill("timer", n=6, description="an unfinished replacement")
    reg.index.put_demos(ghost, reg.embed_texts([d.input for d in ghost.demonstrations]))
    q = reg.embed_texts(["timer input 3"])[0]
    demo_names, demo_vecs, skill_names, skill_vecs = index_matrices(reg)  # committed rows only
    hits = reg.query_demonstrations(q, 20)
    want = retrieve_all(q[None], demo_names, demo_vecs, 20)[0]
    assert len(hits) == 20  # leftovers were skipped, and others took their places
    assert np.allclose([m.similarity for m in hits], [s for _, s in want], atol=1e-5)
    assert sorted(m.skill for m in hits) == sorted(n for n, _ in want)
    rows = reg.query_skills(q, 5)
    want = retrieve_all(q[None], skill_names, skill_vecs, 5)[0]
    assert [m.skill for m in rows] == [n for n, _ in want]
    assert np.allclose([m.similarity for m in rows], [s for _, s in want], atol=1e-5)


@pytest.mark.parametrize("policy", ["max", "max_skill_row"])
def test_retrieving_a_batch_equals_retrieving_each_query_alone(syn_registry, policy):
    """One index search for a server's batch of queries (Router.retrieve_many) finds what one search
    per query finds, leftover rows skipped, skill rows too when the policy reads them."""
    reg = syn_registry
    ghost = make_skill("timer", n=6, description="an unfinished replacement")  # leftovers near timer queries
    reg.index.put_demos(ghost, reg.embed_texts([d.input for d in ghost.demonstrations]))
    router = Router(reg, params=RouterParams(policy=policy, n_demos=8))
    vectors = reg.embed_texts(["timer input 3", "convert input 1", "banana guitar volcano", "timer input 5"])
    calls = []
    real = reg.index.nearest_many
    reg.index.nearest_many = lambda *a: (calls.append((a[0], len(a[1]))), real(*a))[1]
    many = router.retrieve_many(vectors)
    assert calls[0] == ("demonstrations", 4)  # one search for all (then, alone, those that met leftovers)
    reg.index.nearest_many = real
    for vector, got in zip(vectors, many):
        alone = router.retrieve(vector)
        assert got.demo_hits == alone.demo_hits and got.skill_hits == alone.skill_hits
        assert np.array_equal(got.embedding, alone.embedding)
    assert any(m.demo_hits[0][0] == "timer" for m in many) and bool(many[0].skill_hits) == (policy != "max")
    assert router.retrieve_many(vectors[:0]) == []


@pytest.mark.parametrize("n", [1, 2, 5, 9, 12])
def test_best_first_equals_a_stable_full_sort(n):
    rng = np.random.default_rng(n)
    values = np.round(rng.standard_normal(10), 1)
    values[[2, 6, 7]] = values.max()  # ties at the top keep the lower index first
    assert best_first(values, n).tolist() == np.argsort(-values, kind="stable")[:n].tolist()


def test_an_empty_registry_routes_to_nothing(tmp_path):
    from skillsoup.registry import SkillRegistry

    with SkillRegistry.open(tmp_path / "empty", embedder="hash:32") as reg:
        assert Router(reg).route("anything at all") == []


@pytest.mark.parametrize(("query", "message"), [
    ("", "empty"),
    ("  \n\t ", "empty"),
    ("x" * 1_000_000, "1,000,000 characters; the limit is 4,000"),
    ("x" * 4001, "limit is 4,000"),
    (None, "a query is a string"),
    (b"bytes", "a query is a string"),
])
def test_bad_queries_are_typed_errors(syn_registry, query, message):
    with pytest.raises(RoutingError, match=message):
        Router(syn_registry).route(query)


@pytest.mark.parametrize("top_k", [0, -1, True, 2.5, "3", 1000])
def test_bad_top_k(syn_registry, top_k):
    with pytest.raises(RoutingError, match="top_k must be an integer"):
        Router(syn_registry).route(TIMER_QUERY, top_k=top_k)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"router": "vector"}, "choose one of text, state, hybrid"),
    ({"examples": [("a", "b")] * 3}, "at most 2 example pairs"),
    ({"examples": ["just a string"]}, "pair of strings"),
    ({"router": "state"}, "state routing needs a model"),
])
def test_bad_router_options(syn_registry, kwargs, message):
    with pytest.raises(RoutingError, match=message):
        Router(syn_registry).route(TIMER_QUERY, **kwargs)


@pytest.mark.parametrize(("field", "value"), [
    ("temperature", 0), ("temperature", -1.0), ("temperature", float("nan")), ("threshold", float("inf")),
    ("hybrid_alpha", 1.5), ("top_k", 0), ("n_demos", True), ("skill_thresholds", {"timer": "high"}),
    ("skill_thresholds", ["timer"]), ("temperature", True), ("logistic", {"features": ["max"], "coef": [1.0]}),
])
def test_bad_parameters_are_typed_errors(field, value):
    with pytest.raises(RoutingError):
        RouterParams(**{field: value})


def test_unreadable_stored_parameters_say_how_to_fix(syn_registry):
    syn_registry.set_setting("router", {"policy": "max", "threshold": "high"})
    with pytest.raises(PolicyError, match="threshold"):
        Router(syn_registry)
