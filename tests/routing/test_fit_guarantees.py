"""What ``fit`` promises: an imbalanced labelled set (3% null) keeps the router's abstain recall,
per-skill thresholds are kept only where they win out of sample, requests for skills that are not in
the registry are refused, skills added after the fit are routed to, and ``eval routing`` keeps its keys."""

from __future__ import annotations

import numpy as np
import pytest
from synthetic import make_labelled, make_skills

from skillsoup.routing import selection as sel
from skillsoup.routing.fit import fit
from skillsoup.routing.metrics import KEYS, evaluate
from skillsoup.routing.router import Router


def _balanced(m: dict) -> float:
    return (m["in_scope_accuracy"] + m["abstain_recall"]) / 2


def test_an_imbalanced_fit_set_keeps_abstain_recall(syn_registry):
    router = Router(syn_registry)
    test = make_labelled(600, seed=2, null_share=0.3)
    before = evaluate(router, test, latency_sample=0)
    report = fit(router, make_labelled(1500, seed=1, null_share=0.03), save=False)
    after = evaluate(router, test, latency_sample=0)
    assert report.params.fitted["n_null"] < 0.05 * report.n
    assert after["abstain_recall"] >= before["abstain_recall"]
    assert _balanced(after) >= _balanced(before) and _balanced(after) >= _balanced(after["baseline"])
    # what fit compared, out of fold, and kept: the best of the three
    assert report.routers[report.chosen]["objective"] == max(r["objective"] for r in report.routers.values())


def _items(rng, n_per_skill: int, high_null_skill: str) -> tuple[sel.Items, list, np.ndarray]:
    """Accept scores for 6 skills: right routes score ~0.7, nulls ~0.3, except that the nulls routed
    to ``high_null_skill`` score ~0.75 (it needs its own, higher threshold)."""
    labels, tops, scores, kinds = [], [], [], []
    for skill in "abcdef":
        for _ in range(n_per_skill):
            labels.append(skill), tops.append(skill), kinds.append("in")
            scores.append(rng.normal(0.7 if skill != high_null_skill else 0.85, 0.08))
            labels.append(None), tops.append(skill), kinds.append("real")
            scores.append(rng.normal(0.75 if skill == high_null_skill else 0.3, 0.05))
    kinds = np.array(kinds)
    it = sel.Items(labels, kinds, np.where(kinds == "in", 0.5 / (kinds == "in").sum(), 0.5 / (kinds != "in").sum()),
                   kinds == "in")
    return it, tops, np.array(scores)


def _value(it, tops, scores, threshold, per_skill) -> float:
    return sel.value(it, sel.classifier_decisions(tops, scores, threshold, per_skill))


@pytest.mark.parametrize("seed", range(5))
def test_per_skill_thresholds_only_where_they_win_out_of_sample(seed):
    rng = np.random.default_rng(seed)
    it, tops, scores = _items(rng, 30, high_null_skill="c")
    threshold, per_skill, info = sel.thresholds(it, tops, scores, seed=seed)
    assert "c" in per_skill and per_skill["c"] > threshold and info["tried"] == 6
    fresh = _items(rng, 200, high_null_skill="c")  # new queries from the same distribution
    assert _value(*fresh, threshold, per_skill) >= _value(*fresh, threshold, {})
    # with no skill-specific signal, per-skill thresholds are (almost) never kept
    noise = _items(rng, 30, high_null_skill="none")
    _, kept, _ = sel.thresholds(*noise, seed=seed)
    assert len(kept) <= 1


def test_requests_for_skills_left_out_of_the_registry_are_refused(syn_registry):
    syn_registry.remove("math")
    syn_registry.remove("dates")
    router = Router(syn_registry)
    train = [r for r in make_labelled(1500, seed=1, null_share=0.03) if r["skill"] not in ("math", "dates")]
    fit(router, train, save=False)
    assert router.params.policy == "classifier"
    missing = [{"query": r["query"], "skill": None} for r in make_labelled(400, seed=5, null_share=0.0)
               if r["skill"] in ("math", "dates")]
    result = evaluate(router, missing, baseline=False, latency_sample=0)
    assert result["abstain_recall"] >= 0.8


def test_a_skill_added_after_the_fit_is_routed_to(syn_registry, tiny_model):
    weather = next(s for s in make_skills() if s.name == "weather")
    syn_registry.remove("weather")
    router = Router(syn_registry)
    fit(router, [r for r in make_labelled(800, seed=1) if r["skill"] != "weather"])
    assert router.params.policy == "classifier" and router.status()["since_fit"]["added"] == []
    syn_registry.add([weather], tiny_model)
    again = Router(syn_registry)  # a router opened later: the stored model, one skill more
    status = again.status()
    assert status["fitted"] and status["since_fit"] == {"added": ["weather"], "removed": [], "changed": []}
    queries = [r for r in make_labelled(300, seed=6, null_share=0.0) if r["skill"] == "weather"]
    routed = [again.route(r["query"]) for r in queries]
    assert np.mean([bool(m) and m[0].name == "weather" for m in routed]) >= 0.7
    syn_registry.remove("timer")  # a removed skill is never routed to
    gone = Router(syn_registry)
    assert gone.status()["since_fit"]["removed"] == ["timer"]
    assert all(m.name != "timer" for m in gone.route("please set the alarm countdown for ten minutes"))


def test_eval_routing_keeps_its_json_keys(syn_registry):
    router = Router(syn_registry)
    fit(router, make_labelled(300, seed=1), save=False)
    result = evaluate(router, make_labelled(40, seed=3), latency_sample=2)
    old = set(KEYS) | {"policy", "threshold", "router", "fitted", "settings_version", "baseline"}
    assert old <= set(result) and set(KEYS) | {"policy", "threshold"} <= set(result["baseline"])
    assert result["fitted"] is True and result["policy"] == router.params.policy


def test_fit_from_the_demonstrations_alone(syn_registry):
    """No labelled queries: the folds run over the demonstrations, held-out skills give the nulls."""
    router = Router(syn_registry)
    report = fit(router, None, save=False)
    assert report.n == 0 and report.params.fitted["n"] == 0
    for r in report.routers.values():
        assert 0 <= r["in_scope_accuracy"] <= 1 and r["abstain_recall_real"] is None
        assert 0 <= r["abstain_recall_pseudo"] <= 1
    test = make_labelled(300, seed=2, null_share=0.3)
    before = evaluate(Router(syn_registry), test, baseline=False, latency_sample=0)
    after = evaluate(router, test, baseline=False, latency_sample=0)
    assert _balanced(after) >= _balanced(before) - 0.05  # chosen out of fold: no worse beyond noise


def test_accuracy_at_r_keeps_abstain_recall_at_r_and_trades_the_rest_for_accuracy(syn_registry):
    router = Router(syn_registry)
    labelled = make_labelled(1500, seed=1, null_share=0.03)
    balanced = fit(router, labelled, save=False)
    r = 0.5
    constrained = fit(router, labelled, save=False, objective=f"accuracy@{r}")
    chosen = constrained.routers[constrained.chosen]
    assert constrained.objective == f"accuracy@{r}"
    assert chosen["abstain_recall"] >= r  # out of fold, as fit measured it
    assert chosen["objective"] == pytest.approx(chosen["in_scope_accuracy"])
    # the constraint is looser than what balanced settled on, so accuracy may only rise
    if balanced.routers[balanced.chosen]["abstain_recall"] > r:
        assert chosen["in_scope_accuracy"] >= balanced.routers[balanced.chosen]["in_scope_accuracy"] - 1e-9
    for m in constrained.routers.values():  # a router that misses R ranks below every one that meets it
        assert (m["objective"] < 0) == (m["abstain_recall"] is not None and m["abstain_recall"] < r - 1e-12)


def test_best_weighting_picks_the_most_accurate_weight_that_meets_r():
    rng = np.random.default_rng(0)
    it, tops, scores = _items(rng, 40, high_null_skill="none")

    def decide(itw):
        t, _, _ = sel.thresholds(itw, tops, scores)
        return sel.classifier_decisions(tops, scores, t, {})

    for r in (0.3, 0.8, 0.99):
        w, decisions = sel.best_weighting(f"accuracy@{r}", it, decide)
        m = sel.metrics(it, decisions)
        feasible = [sel.metrics(it, decide(sel.reweighted(it, x))) for x in sel.CONSTRAINED_WEIGHTS]
        feasible = [f for f in feasible if f["abstain_recall"] >= r]
        if feasible:
            assert m["abstain_recall"] >= r
            assert m["in_scope_accuracy"] == max(f["in_scope_accuracy"] for f in feasible)


@pytest.mark.parametrize("bad", ["accuracy@", "accuracy@1.5", "accuracy@0", "recall@0.5", "accuracy@x", "speed"])
def test_unknown_objectives_are_refused_by_name(bad):
    from skillsoup.errors import RoutingError

    with pytest.raises(RoutingError, match="accuracy@R"):
        sel.min_abstain(bad)


def _sibling_skills():
    """Four skills whose demonstrations carry the same data under four requests (as the bundled demo
    skills do), and real queries: the request with data never seen."""
    import random

    from skillsoup.skills.skill import Demonstration, Skill

    rng = random.Random(0)
    requests = {"acronym": "acronym initials", "count": "wordcount tally", "upper": "uppercase capitals",
                "snake": "snakecase identifier"}
    seen = [" ".join(rng.sample("oak river lamp stone jacket forest silver orange dusty market".split(), 3))
            for _ in range(8)]
    fresh = "zebra planet velvet ladder apple cedar purple meadow glass feather".split()
    skills = [Skill(name, f"the {name} skill", tuple(Demonstration(f"{req} {data}", f"{name}-{i}")
                                                      for i, data in enumerate(seen)))
              for name, req in requests.items()]
    queries = [{"query": f"{req} {' '.join(rng.sample(fresh, 3))}", "skill": name}
               for name, req in requests.items() for _ in range(10)]
    return skills, queries


@pytest.mark.parametrize("twins", [True, False])
def test_a_fit_on_sibling_skills_demonstrations_alone_keeps_routing(tmp_path, tiny_model, monkeypatch, twins):
    import skillsoup.routing.crossval as cv
    from skillsoup.registry import SkillRegistry

    skills, queries = _sibling_skills()
    with SkillRegistry.open(tmp_path / "reg", embedder="hash:256") as reg:
        reg.add(skills, tiny_model)
        router = Router(reg)
        before = evaluate(router, queries, latency_sample=0)["in_scope_accuracy"]
        if not twins:  # without twin folds, held-out demonstrations are found by their data
            monkeypatch.setattr(cv, "TWIN_SIMILARITY", 2.0)
        fit(router, None, save=False)
        after = evaluate(router, queries, latency_sample=0)["in_scope_accuracy"]
    assert before >= 0.9
    if twins:
        assert after >= before - 0.05, (before, after)
    else:
        assert after < before - 0.2, (before, after)  # the failure the twin folds prevent


def test_twin_groups_join_the_same_data_across_skills_only():
    import skillsoup.routing.crossval as cv
    from skillsoup.embedding import get_embedder

    skills, _ = _sibling_skills()
    texts = [d.input for s in skills for d in s.demonstrations]
    y = np.repeat(np.arange(len(skills)), len(skills[0].demonstrations))
    groups = cv.twin_groups(get_embedder("hash:256").embed(texts), y, cv.TWIN_SIMILARITY)
    by_data = {}
    for text, g in zip(texts, groups):
        by_data.setdefault(text.split(" ", 2)[2], set()).add(g)
    assert all(len(g) == 1 for g in by_data.values())  # one data, one group, across the four skills
    assert len(set(groups)) == len(by_data)
    assert (cv.twin_groups(np.eye(4, dtype=np.float32), np.array([0, 0, 1, 1]), 0.6) == np.arange(4)).all()


def test_a_fitted_classifier_is_stored_with_its_regression_and_read_back(syn_registry):
    from skillsoup.routing.classifier import SkillClassifier

    router = Router(syn_registry)
    report = fit(router, make_labelled(600, seed=1, null_share=0.03))
    assert report.chosen == "classifier"
    stored = SkillClassifier.load(syn_registry.path, router.params.classifier)
    assert stored.weights is not None and stored.weights.shape == (stored.whiten.shape[0], len(stored.skills))
    # a router opened afresh on the registry decides as the fitted one does
    again = Router(syn_registry)
    queries = [it["query"] for it in make_labelled(40, seed=5, null_share=0.3)]
    assert [[m.name for m in again.route(q)] for q in queries] == [[m.name for m in router.route(q)] for q in queries]
