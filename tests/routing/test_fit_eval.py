"""Fitting and evaluating the router: features, the exact threshold search, the logistic model,
metrics on hand-made cases, labelled files, and fit beating the unfitted router and the baseline
on held-out queries."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from synthetic import make_labelled, write_jsonl

from skillsoup.routing.fit import fit, fit_logistic
from skillsoup.routing.metrics import KEYS, decision_metrics, evaluate, expected_calibration_error, read_labelled
from skillsoup.routing.policies import FEATURES, candidates
from skillsoup.routing.router import LabelledDataError, Router, RouterParams
from skillsoup.routing.selection import best_cut


def test_candidate_features_by_hand():
    c = candidates([("a", 0.9), ("b", 0.8), ("b", 0.7), ("a", 0.6), ("c", 0.5)], [("c", 0.4), ("d", 0.3)], k_mean=3)
    assert c.names == ("a", "b", "c", "d")
    f = {n: dict(zip(FEATURES, row)) for n, row in zip(c.names, c.features)}
    assert f["a"] == pytest.approx({"max": 0.9, "mean_topk": (0.9 + 0.6 + 0.5) / 3, "skill_row": 0.3,
                                    "margin": 0.1, "share": 0.4, "is_top": 1.0})
    assert f["d"]["max"] == 0.5 and f["d"]["skill_row"] == 0.3 and f["d"]["margin"] == pytest.approx(-0.4)
    assert f["c"]["skill_row"] == 0.4 and f["b"]["share"] == 0.4 and f["b"]["is_top"] == 0.0
    assert len(candidates([], [])) == 0


def test_threshold_search_is_the_exact_optimum():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 9))
        scores = np.round(rng.random(n), 1)  # ties on purpose
        take, leave = rng.random(n) * (rng.random(n) < 0.5), rng.random(n) * (rng.random(n) < 0.4)
        t, value = best_cut(scores, take, leave)
        brute = max(take[scores >= u].sum() + leave[scores < u].sum() for u in [-np.inf, *scores, scores.max() + 1])
        assert value == pytest.approx(brute)
        assert take[scores >= t].sum() + leave[scores < t].sum() == pytest.approx(brute)


def test_logistic_fit_recovers_a_known_model():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, len(FEATURES)))
    true = np.array([2.0, -1.0, 0.0, 0.5, 0.0, 1.0])
    y = (rng.random(4000) < 1 / (1 + np.exp(-(x @ true - 0.5)))).astype(float)
    model = fit_logistic(x, y, l2=1e-3)
    coef = np.array(model["coef"]) / np.array(model["scale"])
    assert np.allclose(coef, true, atol=0.2)
    assert model["bias"] - np.sum(np.array(model["coef"]) * np.array(model["mean"]) / np.array(model["scale"])) == pytest.approx(-0.5, abs=0.15)


def test_metrics_on_a_hand_made_case():
    labels = ["a", "a", "b", None, None, "b"]
    decisions = ["a", None, "b", None, "a", "a"]
    m = decision_metrics(labels, decisions, [0.9, 0.6, 0.8, 0.7, 0.6, 0.55])
    assert m["in_scope_accuracy"] == pytest.approx(2 / 4)
    assert m["abstain_recall"] == pytest.approx(1 / 2)
    assert m["abstain_precision"] == pytest.approx(1 / 2)
    f1 = {"a": 2 * 1 / (2 + 2 + 1), "b": 2 * 1 / (2 + 0 + 1), None: 2 * 1 / (2 + 1 + 1)}
    assert m["macro_f1"] == pytest.approx(np.mean(list(f1.values())))
    assert m["n"] == 6
    assert decision_metrics(["a"], ["a"], [1.0])["abstain_precision"] is None  # nothing to measure


def test_expected_calibration_error():
    assert expected_calibration_error(np.array([0.95] * 10), np.array([1.0] * 10)) == pytest.approx(0.05)
    # two bins: 0.25 confident and right half the time; 0.85 confident and always right
    conf = np.array([0.25, 0.25, 0.85, 0.85])
    assert expected_calibration_error(conf, np.array([1.0, 0.0, 1.0, 1.0])) == pytest.approx(0.5 * 0.25 + 0.5 * 0.15)


@pytest.mark.parametrize(("text", "message"), [
    ('{"query": "a", "skill": "timer"}\n{"query": oops}\n', ":2: not valid JSON"),
    ('\n\n["query", "skill"]\n', ":3: expected an object"),
    ('{"query": "", "skill": null}\n', ':1: "query" must be a non-empty string'),
    ('{"query": "hello"}\n', ':1: missing "skill"'),
    ('{"q": "hello", "skill": null}\n', ":1: missing \"query\" \\(the request text\\) \\(the line has 'q'\\)"),  # misspelt
    ('{"query": "hello", "skil": "timer"}\n', ":1: missing \"skill\".*\\(the line has 'skil'\\)"),
    ('{"query": "hello", "skill": 7}\n', ':1: "skill" must be a skill name or null'),
    ("", "holds no labelled queries"),
    ('{"query": "' + "x" * 5000 + '", "skill": null}\n', ":1: the query has 5,000 characters"),
])
def test_malformed_jsonl_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(LabelledDataError, match=message) as err:
        read_labelled(path)
    assert str(path) in str(err.value)


def test_labelled_file_errors(tmp_path, syn_registry):
    with pytest.raises(LabelledDataError, match="does not exist"):
        read_labelled(tmp_path / "nope.jsonl")
    with pytest.raises(LabelledDataError, match="is a folder"):
        read_labelled(tmp_path)
    path = write_jsonl(tmp_path / "x.jsonl", [{"query": "q", "skill": "timer"}, {"query": "r", "skill": "nosuch"}])
    with pytest.raises(LabelledDataError, match=r"x\.jsonl:2: unknown skill 'nosuch'"):
        fit(Router(syn_registry), path)
    with pytest.raises(LabelledDataError, match="every labelled query says null"):
        fit(Router(syn_registry), [{"query": "q", "skill": None}])


def _balanced(metrics: dict) -> float:
    return (metrics["in_scope_accuracy"] + metrics["abstain_recall"]) / 2


def test_fit_beats_the_unfitted_router_and_the_baseline_on_held_out_queries(syn_registry, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", make_labelled(1500, seed=1))
    test = write_jsonl(tmp_path / "test.jsonl", make_labelled(600, seed=2))
    router = Router(syn_registry)
    before = evaluate(router, test, latency_sample=5)
    t0 = time.perf_counter()
    report = fit(router, train)
    seconds = time.perf_counter() - t0
    after = evaluate(router, test, latency_sample=5)
    assert report.n == 1500 and seconds < 30  # seconds, not minutes, with a fast embedder
    assert after["fitted"] and not before["fitted"]
    assert after["macro_f1"] > before["macro_f1"] + 0.03
    assert _balanced(after) > _balanced(before) + 0.1
    assert after["ece"] < before["ece"]
    assert after["macro_f1"] > after["baseline"]["macro_f1"]  # better than the nearest-neighbour threshold
    assert _balanced(after) > _balanced(after["baseline"])
    # stored: a new router over the same registry routes like the fitted one
    again = Router(syn_registry)
    assert again.params == router.params and again.params.fitted["n"] == 1500
    q = "please set the alarm countdown for ten minutes"
    assert again.route(q) == router.route(q)


def test_evaluate_returns_the_documented_keys(syn_registry, tmp_path):
    test = write_jsonl(tmp_path / "t.jsonl", make_labelled(40, seed=3))
    result = evaluate(Router(syn_registry), test, latency_sample=4)
    json.dumps(result)  # plain JSON data
    for key in KEYS:
        assert key in result and key in result["baseline"]
    assert result["n"] == 40 and result["p95_ms"] >= result["p50_ms"] > 0
    for key in ("in_scope_accuracy", "abstain_recall", "abstain_precision", "macro_f1", "ece"):
        assert 0.0 <= result[key] <= 1.0
    assert result["baseline"]["policy"] == "nn-threshold"


def test_fit_accepts_values_as_well_as_files(syn_registry):
    rows = make_labelled(200, seed=4)
    report = fit(Router(syn_registry), rows, save=False)
    assert report.n == 200 and syn_registry.get_setting("router") is None  # save=False stores nothing
    assert not (syn_registry.path / "router").exists()
    assert set(report.routers) == {"unfitted", "baseline", "classifier"} and report.chosen in report.routers
    assert math.isfinite(report.params.threshold)
    assert report.baseline.policy == "max" and report.baseline.top_k == 1
    assert report.baseline.threshold == report.params.fitted["baseline"]["threshold"]


def test_default_params_are_valid():
    assert RouterParams().policy == "max"
