"""Fitting the text router on labelled queries, or on the demonstrations alone (numpy; torch trains
the classifier's softmax regression).

``fit`` never ships a worse router. Steps, all on one batch:
    1. embed every labelled query at once; read every committed demonstration and skill row once
    2. out-of-fold data (crossval.py): in-scope queries scored by models that did not see them,
       labelled nulls, and queries of whole skills held out of the model ("no skill" on purpose)
    3. the candidate, the skill classifier (classifier.py): its kNN weight and temperature by
       out-of-fold log-likelihood, its accept model and abstain threshold, and per-skill thresholds
       only where they win on held-out halves (selection.py); its out-of-fold score is cross-fitted
       (accept model and thresholds fitted on one half of the items, scored on the other)
    4. the same items decided by the unfitted router and the nearest-neighbour baseline (whose one
       threshold is fitted on them); the best of the three under the objective is kept and stored
With no labelled queries, step 2 folds over the demonstrations themselves.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from skillsoup.routing import policies as rf
from skillsoup.routing import selection as sel
from skillsoup.routing.classifier import SkillClassifier, train_classifier
from skillsoup.routing.crossval import Examples, out_of_fold
from skillsoup.routing.index_data import encoded_matrices, index_matrices
from skillsoup.routing.metrics import as_labelled
from skillsoup.routing.router import LabelledDataError, Router, RouterParams, baseline_params

log = logging.getLogger(__name__)

SHRINK = 0.1  # covariance shrinkage of the classifier
CHOICES = ("unfitted", "baseline", "classifier")  # ties go to the first


@dataclass(frozen=True)
class FitReport:
    params: RouterParams  # the chosen router's parameters (what is saved)
    baseline: RouterParams  # the nearest-neighbour-threshold baseline
    routers: dict  # "unfitted" / "baseline" / "classifier" -> out-of-fold metrics and "objective"
    chosen: str
    objective: str
    n: int
    seconds: float
    embed_seconds: float


# ---- logistic model (the classifier's accept model; the old per-candidate policy) ---------------
def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50, features=rf.FEATURES,
                 weights: np.ndarray | None = None) -> dict:
    """P(y=1 | x) = sigmoid(((x - mean) / scale) @ coef + bias), Newton steps with an L2 penalty on
    coef; ``weights`` scale each sample's log-likelihood (they sum to the sample count by default)."""
    w_s = np.ones(len(x)) if weights is None else np.asarray(weights, np.float64) * len(x) / np.sum(weights)
    mean = np.average(x, axis=0, weights=w_s)
    scale = np.sqrt(np.average((x - mean) ** 2, axis=0, weights=w_s))
    scale = np.where(scale < 1e-9, 1.0, scale)
    a = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    penalty = np.full(a.shape[1], l2)
    penalty[-1] = 0.0
    w = np.zeros(a.shape[1])
    for _ in range(iters):
        p = rf.sigmoid(a @ w)
        grad = a.T @ (w_s * (p - y)) + penalty * w
        hess = a.T @ (a * (w_s * p * (1 - p))[:, None]) + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return {"features": list(features), "mean": mean.tolist(), "scale": scale.tolist(),
            "coef": w[:-1].tolist(), "bias": float(w[-1])}


# ---- fit ----------------------------------------------------------------------------------------
def _examples(registry, queries: np.ndarray, labels: list, encoder=None) -> Examples:
    demo_names, demo_vecs, row_names, row_vecs = index_matrices(registry) if encoder is None else \
        encoded_matrices(registry, encoder)
    names = tuple(sorted(row_names))
    col = {n: i for i, n in enumerate(names)}
    rows = row_vecs[np.argsort(row_names.astype(str), kind="stable")]
    return Examples(names, demo_vecs, np.array([col[n] for n in demo_names], int), rows,
                    queries.reshape(len(labels), -1) if len(labels) else np.zeros((0, demo_vecs.shape[1]), np.float32),
                    np.array([col[lab] if lab is not None else -1 for lab in labels], int))


def _candidate(groups, it: sel.Items, objective: str) -> tuple[dict, list]:
    """The calibrated classifier's parameters (beta, temperature, accept model, thresholds), and its
    decisions on the items with accept model and thresholds cross-fitted over two halves."""
    beta, temperature = sel.calibrate(groups)
    tops, feats = sel.classifier_outputs(groups, beta, temperature)
    half = np.random.default_rng(1).permutation(len(tops)) % 2 == 0

    def cross_fitted(itw: sel.Items) -> list:
        decisions: list = [None] * len(tops)
        for part in (half, ~half):
            fit_idx, held = np.flatnonzero(~part), np.flatnonzero(part)
            sub = sel.Items([itw.labels[i] for i in fit_idx], itw.kinds[fit_idx], itw.weights[fit_idx], itw.in_scope[fit_idx])
            sub_tops = [tops[i] for i in fit_idx]
            model = sel.fit_accept(sub, sub_tops, feats[fit_idx], fit_logistic)
            t, per_skill, _ = sel.thresholds(sub, sub_tops, sel.accept_scores(model, feats[fit_idx]))
            got = sel.classifier_decisions([tops[i] for i in held], sel.accept_scores(model, feats[held]), t, per_skill)
            for i, d in zip(held, got):
                decisions[i] = d
        return decisions

    w_in, decisions = sel.best_weighting(objective, it, cross_fitted)
    itw = sel.reweighted(it, w_in)
    model = sel.fit_accept(itw, tops, feats, fit_logistic)
    t, per_skill, info = sel.thresholds(itw, tops, sel.accept_scores(model, feats))
    return {"beta": beta, "temperature": temperature, "accept": model, "threshold": t, "skill_thresholds": per_skill,
            "per_skill_tried": info["tried"]}, decisions


def fit(router: Router, labelled=None, save: bool = True, objective: str = "balanced", seed: int = 0,
        encoder=None) -> FitReport:
    """Fit the router on labelled queries (a JSONL path or LabelledQuery values; None: the
    demonstrations alone) and keep the best of the skill classifier, the unfitted router and the
    nearest-neighbour baseline on out-of-fold data under ``objective`` (selection.OBJECTIVES). The
    router takes the chosen parameters; with ``save`` the registry stores them. ``encoder``: an
    embedder to try instead of the registry's (queries, demonstrations and skill rows are embedded
    with it in memory; routing/tune.py), never saved.

    BLAS runs on one thread here: the matrices are a few hundred wide, and on a shared 2-core CPU
    (load 10) multi-threaded OpenBLAS spun: the out-of-fold step of a 150-skill fit took 35-50 s
    instead of 6.7 s (a 384 x 384 Cholesky 0.66 s instead of milliseconds)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return _fit(router, labelled, save and encoder is None, objective, seed, encoder)


def _fit(router: Router, labelled, save: bool, objective: str, seed: int, encoder=None) -> FitReport:
    t0 = time.perf_counter()
    registry, p = router.registry, router.params
    items = as_labelled(labelled, registry.names()) if labelled is not None else []
    labels = [it.skill for it in items]
    n_in = sum(lab is not None for lab in labels)
    if items and n_in == 0:
        raise LabelledDataError("every labelled query says null; fitting needs queries labelled with a skill")
    w_in = sel.objective_weight(objective, n_in, len(labels) - n_in)  # checks the objective first
    t_embed = time.perf_counter()
    embed = router.embed if encoder is None else encoder.embed
    queries = embed([it.query for it in items]) if items else np.zeros((0, 1), np.float32)
    embed_seconds = time.perf_counter() - t_embed
    ex = _examples(registry, queries, labels, encoder)
    groups = out_of_fold(ex, p.n_demos, p.n_skill_rows, SHRINK, seed)
    it = sel.items(groups, w_in)

    cand, cand_decisions = _candidate(groups, it, objective)
    unfitted = p if p.policy in rf.SIMILARITY_POLICIES else RouterParams(n_demos=p.n_demos, n_skill_rows=p.n_skill_rows)
    u_tops, u_scores = sel.similarity_tops(groups, unfitted.policy, unfitted.k_mean)
    b_tops, b_scores = sel.similarity_tops(groups, "max", unfitted.k_mean) if unfitted.policy != "max" else (u_tops, u_scores)
    b_w, b_decisions = sel.best_weighting(objective, it, lambda itw: sel.similarity_decisions(
        b_tops, b_scores, sel.baseline_threshold(itw, b_tops, b_scores)))
    b_threshold = sel.baseline_threshold(sel.reweighted(it, b_w), b_tops, b_scores)
    decisions = {
        "unfitted": sel.similarity_decisions(u_tops, u_scores, unfitted.threshold, unfitted.skill_thresholds),
        "baseline": b_decisions,
        "classifier": cand_decisions,
    }
    routers = {name: dict(sel.metrics(it, d), objective=sel.value(it, d, objective),
                          objective_labelled=sel.labelled_value(it, d, objective, w_in))
               for name, d in decisions.items()}
    chosen = max(CHOICES, key=lambda k: (round(routers[k]["objective"], 9), -CHOICES.index(k)))

    fitted = {"n": len(items), "n_in_scope": n_in, "n_null": len(labels) - n_in, "skills": len(ex.names),
              "encoder": (encoder or registry.embedder).name,
              "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "objective": objective, "chosen": chosen,
              "routers": routers, "baseline": {"policy": "max", "threshold": b_threshold}}
    if chosen == "classifier":
        arrays = train_classifier(
            np.concatenate([ex.demo_x, ex.row_x, ex.query_x[ex.query_y >= 0]]),
            np.concatenate([ex.demo_y, np.arange(len(ex.names)), ex.query_y[ex.query_y >= 0]]), len(ex.names), SHRINK)
        hashes = registry.index.skill_metadata(list(ex.names))
        model = SkillClassifier(ex.names, tuple(str(hashes[n].get("content_hash", ""))[:12] for n in ex.names),
                                beta=cand["beta"], temperature=cand["temperature"], accept=cand["accept"], **arrays)
        ref = model.save(registry.path) if save else model.save(None)
        params = p.replace(policy="classifier", threshold=cand["threshold"], skill_thresholds=cand["skill_thresholds"],
                           classifier=ref, logistic=None, fitted=fitted)
        router.use_classifier(model)
    elif chosen == "baseline":
        params = baseline_params(p.replace(fitted=fitted)).replace(fitted=fitted, n_skill_rows=p.n_skill_rows)
    else:
        params = unfitted.replace(fitted=fitted)
    fitted["seconds"] = round(time.perf_counter() - t0, 3)
    log.info("fitted the router on %d labelled queries in %.2f s: %s (objective %s: %s)", len(items), fitted["seconds"],
             chosen, objective, ", ".join(f"{k} {v['objective']:.3f}" for k, v in routers.items()))
    router.params = params
    if save:
        router.save()
    return FitReport(params, baseline_params(params), routers, chosen, objective, len(items), fitted["seconds"], embed_seconds)
