"""The skill classifier: the shared-covariance Gaussian against a plain reference, kNN features
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
