"""Fitting the text router on labelled queries (numpy only).

Steps, all on one batch:
    1. embed every query at once; read every committed demonstration and skill row (with its
       embedding) from the index once
    2. retrieve exactly in numpy what the router retrieves from Chroma per query (the ``n_demos``
       nearest demonstrations, the ``n_skill_rows`` nearest skill rows) and build the same
       candidate features (``policies.candidates``)
    3. ``logistic``: a logistic model over the standardised features, P(candidate is the labelled
       skill), L2-regularised, fitted by Newton steps; its scores for choosing thresholds are
       out-of-fold (5 folds), so the threshold is not tuned on memorised answers
    4. every policy gets the abstain threshold that maximises the balanced objective: the mean of
       in-scope accuracy and abstain accuracy (just in-scope accuracy when no query is labelled null);
       the best policy wins (ties go to the simpler one)
    5. per-skill thresholds for skills that are the top candidate of at least 8 queries, shrunk
       toward the global one (20 pseudo-queries), and the softmax temperature that minimises the
       negative log-likelihood of the right skill's weight where several skills pass
The baseline is the plain nearest-neighbour threshold: policy ``max``, one skill, its own threshold.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from skillsoup.errors import RegistryError
from skillsoup.registry.index import DEMOS, SKILLS
from skillsoup.routing import policies as rf
from skillsoup.routing.metrics import as_labelled
from skillsoup.routing.router import LabelledDataError, Router, RouterParams, baseline_params

log = logging.getLogger(__name__)

MIN_PER_SKILL = 8
SHRINK = 20.0
FOLDS = 5
TEMPERATURES = np.geomspace(1e-3, 10.0, 61)
_PAGE = 1000


@dataclass(frozen=True)
class FitReport:
    params: RouterParams  # the fitted router's parameters (what is saved)
    baseline: RouterParams  # the nearest-neighbour-threshold baseline
    policies: dict  # policy -> {"threshold", "objective"} on the training queries
    n: int
    seconds: float
    embed_seconds: float


# ---- the index as matrices ----------------------------------------------------------------------
def _all_rows(col, include: list[str]):
    offset = 0
    while True:
        res = col.get(include=include, limit=_PAGE, offset=offset)
        yield res
        if len(res["ids"]) < _PAGE:
            return
        offset += _PAGE


def index_matrices(registry) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(demo skill names [D], demo embeddings [D, dim], skill names [S], skill-row embeddings [S, dim])
    of committed skills (demonstration rows of other content hashes are skipped, as in queries)."""
    meta = registry.index.skill_metadata()
    if not meta:
        raise RegistryError(f"registry {registry.path} has no skills; add some before fitting the router")
    demo_names, demo_vecs, skill_names, skill_vecs = [], [], [], []
    for res in _all_rows(registry.index.collection(DEMOS, create=False), ["embeddings", "metadatas"]):
        for m, e in zip(res["metadatas"], res["embeddings"]):
            name = (m or {}).get("skill")
            if name in meta and meta[name].get("content_hash") == m.get("content_hash"):
                demo_names.append(name)
                demo_vecs.append(np.asarray(e, np.float32))
    for res in _all_rows(registry.index.collection(SKILLS, create=False), ["embeddings"]):
        skill_names += list(res["ids"])
        skill_vecs += [np.asarray(e, np.float32) for e in res["embeddings"]]
    return np.array(demo_names), np.stack(demo_vecs), np.array(skill_names), np.stack(skill_vecs)


def retrieve_all(queries: np.ndarray, names: np.ndarray, vectors: np.ndarray, n: int) -> list[list[tuple[str, float]]]:
    """The ``n`` nearest rows (cosine; rows are unit vectors) of each query, best first."""
    out = []
    n = min(n, len(names))
    for start in range(0, len(queries), 256):
        sims = queries[start : start + 256] @ vectors.T  # [q, rows]
        top = np.argpartition(-sims, n - 1, axis=1)[:, :n]
        for row, idx in zip(sims, top):
            idx = idx[np.argsort(-row[idx], kind="stable")]
            out.append([(str(names[i]), float(row[i])) for i in idx])
    return out


# ---- logistic model -----------------------------------------------------------------------------
def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> dict:
    """P(y=1 | x) = sigmoid(((x - mean) / scale) @ coef + bias), Newton steps with an L2 penalty on coef."""
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale < 1e-9, 1.0, scale)
    a = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    penalty = np.full(a.shape[1], l2)
    penalty[-1] = 0.0
    w = np.zeros(a.shape[1])
    for _ in range(iters):
        p = rf.sigmoid(a @ w)
        grad = a.T @ (p - y) + penalty * w
        hess = a.T @ (a * (p * (1 - p))[:, None]) + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return {"features": list(rf.FEATURES), "mean": mean.tolist(), "scale": scale.tolist(),
            "coef": w[:-1].tolist(), "bias": float(w[-1])}


def _design(cands: list[rf.Candidates], labels: list[str | None]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.vstack([c.features for c in cands if len(c)])
    y = np.concatenate([[float(n == lab) for n in c.names] for c, lab in zip(cands, labels) if len(c)])
    group = np.concatenate([[i] * len(c) for i, c in enumerate(cands) if len(c)])
    return x, y, group


def out_of_fold_scores(cands, labels, seed: int = 0) -> tuple[list[np.ndarray], dict]:
    """Logistic scores of each query's candidates from a model that did not see that query, and the
    model fitted on all queries."""
    x, y, group = _design(cands, labels)
    fold = np.random.default_rng(seed).permutation(len(cands)) % FOLDS
    scores = [np.zeros(len(c)) for c in cands]
    for f in range(FOLDS):
        train = (fold != f)[group]
        if not train.any() or y[train].min() == y[train].max():
            continue  # too few queries for this fold: those keep score 0
        model = fit_logistic(x[train], y[train])
        for q in np.flatnonzero(fold == f):
            if len(cands[q]):
                scores[q] = rf.POLICIES["logistic"](cands[q], model)
    return scores, fit_logistic(x, y)


# ---- thresholds and temperature -----------------------------------------------------------------
def best_threshold(scores: np.ndarray, correct: np.ndarray, none: np.ndarray, w_in: float, w_out: float,
                   low: float) -> tuple[float, float]:
    """The threshold t maximising w_in * #(score >= t and correct) + w_out * #(score < t and label none),
    placed midway between neighbouring scores; ``low`` when taking every query is best. -> (t, value)."""
    if scores.size == 0:
        return low, 0.0
    order = np.argsort(scores, kind="stable")
    s, c, o = scores[order], correct[order].astype(float), none[order].astype(float)
    taken = np.concatenate([np.cumsum(c[::-1])[::-1], [0.0]])  # take items j.. : correct among them
    left = np.concatenate([[0.0], np.cumsum(o)])  # abstain on items ..j-1 : right when labelled none
    value = w_in * taken + w_out * left
    valid = np.ones(len(s) + 1, bool)
    valid[1:-1] = s[1:] > s[:-1]  # cannot split equal scores
    j = int(np.argmax(np.where(valid, value, -np.inf)))
    t = low if j == 0 else float(s[-1] + 1e-6) if j == len(s) else float((s[j - 1] + s[j]) / 2)
    return t, float(value[j])


def fit_temperature(cands, scores, labels, thresholds, top_k: int, policy: str, default: float) -> float:
    """The temperature minimising -log(weight of the labelled skill) where it passes with others."""
    cases = []
    for c, s, lab in zip(cands, scores, labels):
        keep = [i for i in np.argsort(-s, kind="stable") if s[i] >= thresholds.get(c.names[i], thresholds[None])][:top_k]
        names = [c.names[i] for i in keep]
        if lab in names and len(keep) > 1:
            cases.append((rf.weight_logits(s[keep], policy), names.index(lab)))
    if not cases:
        return default
    nll = [np.mean([-np.log(rf.softmax(z, t)[i] + 1e-12) for z, i in cases]) for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(nll))])


# ---- fit ----------------------------------------------------------------------------------------
def fit(router: Router, labelled, save: bool = True) -> FitReport:
    """Fit aggregation, thresholds and temperature on labelled queries (a JSONL path or
    LabelledQuery values); the router takes the fitted parameters, and with ``save`` the
    registry stores them (the next Router opened on it uses them)."""
    t0 = time.perf_counter()
    registry, p = router.registry, router.params
    items = as_labelled(labelled, registry.names())
    labels = [it.skill for it in items]
    n_in = sum(lab is not None for lab in labels)
    n_out = len(labels) - n_in
    if n_in == 0:
        raise LabelledDataError("every labelled query says null; fitting needs queries labelled with a skill")
    w_in, w_out = (0.5 / n_in, 0.5 / n_out) if n_out else (1.0 / n_in, 0.0)
    t_embed = time.perf_counter()
    queries = router.embed([it.query for it in items])
    embed_seconds = time.perf_counter() - t_embed
    demo_names, demo_vecs, skill_names, skill_vecs = index_matrices(registry)
    demo_hits = retrieve_all(queries, demo_names, demo_vecs, p.n_demos)
    skill_hits = retrieve_all(queries, skill_names, skill_vecs, p.n_skill_rows)
    cands = [rf.candidates(d, s, p.k_mean) for d, s in zip(demo_hits, skill_hits)]

    oof, model = out_of_fold_scores(cands, labels)
    per_policy = {name: [rf.POLICIES[name](c, None) if len(c) else np.zeros(0) for c in cands]
                  for name in rf.SIMILARITY_POLICIES}
    per_policy["logistic"] = oof
    none = np.array([lab is None for lab in labels])
    results = {}
    for name, scores in per_policy.items():
        top = [int(np.argmax(s)) if len(s) else -1 for s in scores]
        top_score = np.array([s[i] if i >= 0 else -1.0 for s, i in zip(scores, top)])
        correct = np.array([i >= 0 and c.names[i] == lab for c, i, lab in zip(cands, top, labels)])
        low = 0.0 if name == "logistic" else -1.0
        t, value = best_threshold(top_score, correct, none, w_in, w_out, low)
        results[name] = {"threshold": t, "objective": value, "top": top, "top_score": top_score, "correct": correct}
    best = max(results, key=lambda k: results[k]["objective"] - 1e-9 * list(results).index(k))
    chosen = results[best]

    skill_thresholds = {}
    for skill in sorted({c.names[i] for c, i in zip(cands, chosen["top"]) if i >= 0}):
        mask = np.array([i >= 0 and c.names[i] == skill for c, i in zip(cands, chosen["top"])])
        if mask.sum() >= MIN_PER_SKILL:
            own, _ = best_threshold(chosen["top_score"][mask], chosen["correct"][mask], none[mask], w_in, w_out,
                                    0.0 if best == "logistic" else -1.0)
            shrunk = (mask.sum() * own + SHRINK * chosen["threshold"]) / (mask.sum() + SHRINK)
            if abs(shrunk - chosen["threshold"]) > 1e-6:
                skill_thresholds[skill] = float(shrunk)
    thresholds = {None: chosen["threshold"], **skill_thresholds}
    temperature = fit_temperature(cands, per_policy[best], labels, thresholds, p.top_k, best, p.temperature)

    summary = {k: {"threshold": v["threshold"], "objective": v["objective"]} for k, v in results.items()}
    seconds = time.perf_counter() - t0
    fitted = {"n": len(items), "n_in_scope": n_in, "n_null": n_out, "seconds": round(seconds, 3),
              "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "policies": summary,
              "baseline": {"policy": "max", "threshold": results["max"]["threshold"]}}
    params = p.replace(policy=best, threshold=chosen["threshold"], skill_thresholds=skill_thresholds,
                       temperature=temperature, logistic=model, fitted=fitted)
    log.info("fitted router on %d queries in %.2f s: policy %s, threshold %.3f, T %.3g",
             len(items), seconds, best, chosen["threshold"], temperature)
    router.params = params
    if save:
        router.save()
    return FitReport(params, baseline_params(params), summary, len(items), seconds, embed_seconds)
