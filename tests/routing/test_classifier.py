"""The skill classifier: the shared-covariance Gaussian against a plain reference, the softmax
regression against its optimality conditions, kNN features
against brute force, calibration features, storage, and skills added or removed after the fit."""

from __future__ import annotations

import numpy as np
import pytest

from skillsoup.errors import PolicyError
from skillsoup.routing.classifier import (
    SkillClassifier,
    accept_features,
    gaussian_classifier,
    knn_from_hits,
    knn_similarities,
    log_softmax,
    softmax_regression,
    train_classifier,
)


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _data(seed=0, k=4, n=30, d=6):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 2
    y = np.repeat(np.arange(k), n)
    return centres[y] + rng.normal(size=(k * n, d)), y


def test_gaussian_classifier_is_lda_with_shrinkage():
    x, y = _data()
    k, d, shrink = 4, x.shape[1], 0.2
    whiten, means = gaussian_classifier(x, y, k, shrink)
    # reference: class means, pooled covariance, shrunk, and the textbook linear discriminant
    mu = np.stack([x[y == c].mean(0) for c in range(k)])
    cov = sum((x[y == c] - mu[c]).T @ (x[y == c] - mu[c]) for c in range(k)) / (len(x) - k)
    cov = (1 - shrink) * cov + shrink * np.trace(cov) / d * np.eye(d)
    inv = np.linalg.inv(cov)
    q = np.random.default_rng(1).normal(size=(9, d))
    ref = q @ inv @ mu.T - 0.5 * np.einsum("kd,de,ke->k", mu, inv, mu)
    model = SkillClassifier(tuple("abcd"), ("",) * k, whiten, means)
    got = model.discriminants(model.project(q))
    assert np.allclose(got, ref, rtol=1e-4, atol=1e-3)
    # the Mahalanobis distance to the nearest mean, as the accept feature computes it
    _, feats = model.predict(q, np.zeros((9, k)))
    maha = np.min([np.einsum("nd,de,ne->n", q - m, inv, q - m) for m in mu], axis=0)
    assert np.allclose(feats[:, 2], maha, rtol=1e-3, atol=1e-3)
    with pytest.raises(ValueError, match="at least one example"):
        gaussian_classifier(x, y, k + 1)


def test_knn_similarities_equal_brute_force_over_the_retrieved_rows():
    rng = np.random.default_rng(0)
    memory, queries = _unit(rng.normal(size=(40, 8))), _unit(rng.normal(size=(7, 8)))
    labels = rng.integers(0, 5, 40)
    got = knn_similarities(queries, memory, labels, 5, n=6)
    for q, row in zip(queries, got):
        sims = memory @ q
        top = np.argsort(-sims)[:6]
        want = np.full(5, sims[top].min())
        for i in top:
            want[labels[i]] = max(want[labels[i]], sims[i])
        assert np.allclose(row, want, atol=1e-6)
        # the router builds the same row from its hits
        hits = [(str(labels[i]), float(sims[i])) for i in top]
        assert np.allclose(knn_from_hits({str(i): i for i in range(5)}, hits), want, atol=1e-6)


def test_accept_features_of_the_top_skill():
    logp = log_softmax(np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 3.0]]))
    knn = np.array([[0.9, 0.1, 0.5], [0.2, 0.7, 0.6]])
    f = accept_features(logp, knn, np.array([4.0, 5.0]))
    p = np.exp(logp)
    assert f[0] == pytest.approx([logp[0, 0], p[0, 0] - p[0, 2], 4.0, 0.9])
    assert f[1, 1] == pytest.approx(0.0) and f[1, 3] in (0.7, 0.6)


def test_save_load_and_checksum(tmp_path):
    x, y = _data()
    whiten, means = gaussian_classifier(x, y, 4)
    accept = {"mean": [0.0] * 4, "scale": [1.0] * 4, "coef": [1.0, 0.0, -0.1, 2.0], "bias": 0.5}
    model = SkillClassifier(tuple("abcd"), ("h1", "h2", "h3", "h4"), whiten, means, 5.0, 0.7, accept)
    ref = model.save(tmp_path)
    assert ref == model.save(None)  # the reference names the content, written or not
    back = SkillClassifier.load(tmp_path, ref)
    assert back.skills == model.skills and back.hashes == model.hashes and back.beta == 5.0
    assert np.array_equal(back.means, model.means) and np.array_equal(back.whiten, model.whiten)
    path = tmp_path / ref["file"]
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(PolicyError, match="checksum"):
        SkillClassifier.load(tmp_path, ref)
    path.unlink()
    with pytest.raises(PolicyError, match="missing"):
        SkillClassifier.load(tmp_path, ref)


def test_skills_added_changed_and_removed_after_the_fit():
    x, y = _data(d=6)
    whiten, means = gaussian_classifier(x, y, 4)
    model = SkillClassifier(tuple("abcd"), ("ha", "hb", "hc", "hd"), whiten, means)
    same, changes = model.for_skills({"a": "ha", "b": "hb", "c": "hc", "d": "hd"})
    assert same is model and not any(changes.values())
    now, changes = model.for_skills({"a": "ha", "c": "NEW", "d": "hd", "e": "he"})
    assert changes == {"added": ["e"], "removed": ["b"], "changed": ["c"]}
    assert now.skills == ("a", "d") and np.array_equal(now.means, model.means[[0, 3]])
    q = np.random.default_rng(3).normal(size=(5, 6))
    full = model.discriminants(model.project(q))
    assert np.allclose(now.discriminants(now.project(q)), full[:, [0, 3]])


def test_gaussian_classifier_with_one_example_per_class_uses_plain_distances():
    from skillsoup.routing.classifier import gaussian_classifier

    x = np.eye(3, 8)  # no spread within any class: the covariance is zero before shrinkage
    whiten, means = gaussian_classifier(x, np.arange(3), 3)
    assert np.isfinite(whiten).all() and np.allclose(means, x @ whiten)
    assert np.allclose(whiten, whiten[0, 0] * np.eye(8), atol=1e-6) and whiten[0, 0] > 0  # a multiple of I


def _objective_gradient(x, y, k, w, b, l2):
    """Gradient of the class-balanced cross-entropy + l2 |w|^2 at (w, b), in float64 (the reference):
    each example weighs 1 / (its class's count), normalised over all examples."""
    z = x @ w + b
    p = np.exp(log_softmax(z))
    p[np.arange(len(y)), y] -= 1.0
    ew = 1.0 / np.bincount(y, minlength=k)[y]
    ew /= ew.sum()
    return x.T @ (p * ew[:, None]) + 2 * l2 * w, (p * ew[:, None]).sum(axis=0)


def test_softmax_regression_reaches_the_optimum_of_its_objective():
    x, y = _data(seed=2, k=5, n=40, d=8)
    keep = (y != 4) | (np.arange(len(y)) % 4 == 0)  # class 4 has a quarter of the examples
    x, y = _unit(x[keep]), y[keep]
    l2 = 1e-3
    w, b = softmax_regression(x, y, 5, l2=l2, iters=300)
    assert w.shape == (8, 5) and b.shape == (5,) and w.dtype == np.float32
    gw, gb = _objective_gradient(x, y, 5, w.astype(np.float64), b.astype(np.float64), l2)
    g0w, _ = _objective_gradient(x, y, 5, np.zeros((8, 5)), np.zeros(5), l2)
    assert np.abs(gw).max() < 1e-3 * np.abs(g0w).max() and np.abs(gb).max() < 1e-4
    assert ((x @ w + b).argmax(1) == y).mean() > 0.9
    again = softmax_regression(x, y, 5, l2=l2, iters=300)
    assert np.array_equal(again[0], w)  # deterministic: the stored model does not depend on the run


def test_a_skill_with_more_examples_is_not_made_likelier():
    # skill 0: 20 points, each 10 times; skill 1: their mirror images through the origin, once each.
    # Weighted by class, the problem is symmetric, so the origin is a tie (unweighted: ~log 10 apart)
    points = np.array([1.0, 0.0, 0.0]) + 0.8 * np.random.default_rng(8).normal(size=(20, 3))
    x = np.concatenate([np.repeat(points, 10, axis=0), -points])
    y = np.concatenate([np.zeros(200, int), np.ones(20, int)])
    w, b = softmax_regression(x, y, 2, l2=1e-3, iters=300)
    assert abs(float(b[0] - b[1])) < 0.05
    assert np.allclose(w[:, 0], -w[:, 1], atol=0.05)


def test_regression_scores_rank_skills_and_travel_with_the_model(tmp_path):
    x, y = _data(seed=4, d=6)
    arrays = train_classifier(x, y, 4, shrink=0.1)
    accept = {"mean": [0.0] * 4, "scale": [1.0] * 4, "coef": [1.0, 0.0, -0.1, 2.0], "bias": 0.5}
    model = SkillClassifier(tuple("abcd"), ("ha", "hb", "hc", "hd"), beta=2.0, temperature=0.5, accept=accept, **arrays)
    q = np.random.default_rng(5).normal(size=(6, 6))
    knn = np.random.default_rng(6).uniform(size=(6, 4))
    logp, feats = model.predict(q, knn)
    want = log_softmax((q @ arrays["weights"] + arrays["bias"] + 2.0 * knn) / 0.5)
    assert np.allclose(logp, want, atol=1e-4)
    # the distance feature still comes from the Gaussian model
    gauss = SkillClassifier(tuple("abcd"), ("",) * 4, arrays["whiten"], arrays["means"])
    assert np.allclose(feats[:, 2], gauss.predict(q, knn)[1][:, 2], rtol=1e-5)
    back = SkillClassifier.load(tmp_path, model.save(tmp_path))
    assert np.array_equal(back.weights, model.weights) and np.array_equal(back.bias, model.bias)
    assert np.allclose(back.predict(q, knn)[0], logp)
    now, _ = model.for_skills({"a": "ha", "c": "hc", "d": "CHANGED"})
    assert now.skills == ("a", "c")
    assert np.allclose(now.scores_and_distance(q)[0], (q @ arrays["weights"] + arrays["bias"])[:, [0, 2]], atol=1e-5)
    with pytest.raises(PolicyError, match="inconsistent"):
        SkillClassifier(tuple("abc"), ("",) * 3, arrays["whiten"], arrays["means"][:3], weights=arrays["weights"],
                        bias=arrays["bias"][:3])


def test_a_model_stored_without_regression_weights_still_loads_and_uses_discriminants(tmp_path):
    x, y = _data()
    whiten, means = gaussian_classifier(x, y, 4)
    accept = {"mean": [0.0] * 4, "scale": [1.0] * 4, "coef": [1.0, 0.0, -0.1, 2.0], "bias": 0.5}
    ref = SkillClassifier(tuple("abcd"), ("",) * 4, whiten, means, 0.0, 1.0, accept).save(tmp_path)
    back = SkillClassifier.load(tmp_path, ref)
    q = np.random.default_rng(7).normal(size=(3, x.shape[1]))
    assert back.weights is None
    assert np.allclose(back.predict(q, np.zeros((3, 4)))[0], log_softmax(back.discriminants(back.project(q))), atol=1e-5)


def _metadata(path):
    import json

    blob = path.read_bytes()
    return json.loads(blob[8 : 8 + int.from_bytes(blob[:8], "little")])["__metadata__"]


def test_storage_formats_old_readers_refuse_new_files_and_new_readers_refuse_unknown_ones(tmp_path):
    from safetensors.numpy import save

    from skillsoup.routing.classifier import _digest

    x, y = _data(seed=9)
    arrays = train_classifier(x, y, 4, shrink=0.1)
    accept = {"mean": [0.0] * 4, "scale": [1.0] * 4, "coef": [1.0, 0.0, -0.1, 2.0], "bias": 0.5}
    ref = SkillClassifier(tuple("abcd"), ("",) * 4, beta=1.0, temperature=1.0, accept=accept, **arrays).save(tmp_path)
    meta = _metadata(tmp_path / ref["file"])
    # a format-1 reader looks up "skills" and fails with its typed "unreadable" error, instead of
    # ignoring the regression arrays and scoring with the discriminants alone
    assert meta["format"] == "2" and "skills" not in meta and "hashes" not in meta
    plain = SkillClassifier(tuple("abcd"), ("",) * 4, arrays["whiten"], arrays["means"], 1.0, 1.0, accept).save(tmp_path)
    assert _metadata(tmp_path / plain["file"])["format"] == "1"
    # a file from a newer version
    newer = {"format": "3", "skill_names": '["a"]', "skill_hashes": '[""]'}
    blob = {"whiten": arrays["whiten"], "means": arrays["means"][:1]}
    (tmp_path / "router" / "newer.safetensors").write_bytes(save(blob, metadata=newer))
    with pytest.raises(PolicyError, match="newer skillsoup"):
        SkillClassifier.load(tmp_path, dict(ref, file="router/newer.safetensors", sha256=_digest(blob, newer)))


def test_a_weightless_model_keeps_the_content_address_earlier_versions_gave_it():
    # computed by the version before regression weights existed (d90305b): stored references stay valid
    accept = {"mean": [0.0] * 4, "scale": [1.0] * 4, "coef": [1.0, 0.0, -0.1, 2.0], "bias": 0.5}
    model = SkillClassifier(("a", "b"), ("h1", "h2"), np.eye(3, dtype=np.float32),
                            np.arange(6, dtype=np.float32).reshape(2, 3), 0.0, 1.0, accept)
    assert model.save(None)["sha256"] == "4952a487e36327bc6c5cb41d761f1a6cff268f74ef53be60c74915b24e66defe"
