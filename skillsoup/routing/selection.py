"""Choosing the router on out-of-fold data (crossval.py): calibrate the classifier, fit its accept
model and thresholds, and score it beside the unfitted router and the nearest-neighbour baseline
under the user's objective.

Objective (``OBJECTIVES``): w * in-scope accuracy + (1 - w) * abstain recall, where abstain recall
weighs the labelled nulls and the held-out-skill queries half each (all to the kind present when only
one is). ``balanced`` w = 1/2, ``abstain`` w = 1/4, ``accuracy`` w = the labelled set's in-scope share
(the plain share of labelled queries decided right). ``accuracy@R`` (0 < R < 1): the best in-scope
accuracy whose out-of-fold abstain recall is at least R; thresholds are fitted under each weight of
CONSTRAINED_WEIGHTS and the best one that meets R is kept (a router that misses R ranks below every
one that meets it, by how far it misses).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skillsoup.routing import policies as rf
from skillsoup.routing.classifier import (
    ACCEPT_FEATURES,
    BETAS,
    TEMPERATURES,
    accept_features,
    log_softmax,
    logistic,
)
from skillsoup.routing.crossval import Group

OBJECTIVES = ("balanced", "accuracy", "abstain", "accuracy@R")
CONSTRAINED_WEIGHTS = (0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05)
CALIBRATION_ITEMS = 2000  # in-scope items that calibrate beta and the temperature (a seeded sample)
MIN_PER_SKILL = 8  # out-of-fold items routed to a skill before it may get its own threshold


@dataclass
class Items:
    """Every out-of-fold item, flattened: its label, kind and weight in the objective."""

    labels: list
    kinds: np.ndarray
    weights: np.ndarray  # in-scope items sum to w, null items to 1 - w
    in_scope: np.ndarray  # bool


def min_abstain(objective: str) -> float | None:
    """R of an ``accuracy@R`` objective, None for the weighted ones; a typed error for anything else."""
    if objective in OBJECTIVES[:3]:
        return None
    head, _, tail = objective.partition("@")
    try:
        r = float(tail) if head == "accuracy" else None
    except ValueError:
        r = None
    if r is None or not 0.0 < r < 1.0:
        from skillsoup.errors import RoutingError

        raise RoutingError(f"unknown objective {objective!r}; choose one of balanced, accuracy, abstain or "
                           "accuracy@R with 0 < R < 1 (the best in-scope accuracy at abstain recall >= R, e.g. accuracy@0.65)")
    return r


def objective_weight(objective: str, n_in: int, n_null_labelled: int) -> float:
    """w of a weighted objective; 1/2 for ``accuracy@R`` (its items' starting weight)."""
    if objective == "balanced" or min_abstain(objective) is not None:
        return 0.5
    if objective == "abstain":
        return 0.25
    return n_in / max(1, n_in + n_null_labelled)


def items(groups: list[Group], w_in: float) -> Items:
    labels = [lab for g in groups for lab in g.labels]
    kinds = np.array([g.kind for g in groups for _ in g.labels])
    return reweighted(Items(labels, kinds, np.zeros(len(labels)), kinds == "in"), w_in)


def reweighted(it: Items, w_in: float) -> Items:
    """The same items, the in-scope ones weighing w_in in all and the null kinds 1 - w_in."""
    weights = np.zeros(len(it.labels))
    weights[it.in_scope] = w_in / max(1, it.in_scope.sum())
    present = [k for k in ("real", "pseudo") if (it.kinds == k).any()]
    for k in present:
        mask = it.kinds == k
        weights[mask] = (1 - w_in) / len(present) / mask.sum()
    return Items(it.labels, it.kinds, weights, it.in_scope)


def value(it: Items, decisions: list, objective: str = "balanced") -> float:
    """The decisions' score under the objective (higher is better)."""
    r = min_abstain(objective)
    if r is not None:
        m = metrics(it, decisions)
        abstain = 1.0 if m["abstain_recall"] is None else m["abstain_recall"]
        in_scope = m["in_scope_accuracy"] or 0.0
        return in_scope if abstain >= r - 1e-12 else abstain - r - 1.0
    right = np.array([d == lab for d, lab in zip(decisions, it.labels)])
    return float((it.weights * right).sum())


def best_weighting(objective: str, it: Items, decide) -> tuple[float, list]:
    """(w_in, decisions) of the best ``decide(items weighted with w_in)`` under the objective: the
    objective's own weight, or the scan of CONSTRAINED_WEIGHTS for ``accuracy@R``."""
    if min_abstain(objective) is None:
        w = float(it.weights[it.in_scope].sum())
        return w, decide(it)
    tried = [(w, decide(reweighted(it, w))) for w in CONSTRAINED_WEIGHTS]
    return max(tried, key=lambda wd: value(it, wd[1], objective))


def labelled_value(it: Items, decisions: list, objective: str, w_in: float) -> float | None:
    """The objective on the labelled queries alone (in-scope ones and labelled nulls, not the
    queries of skills held out of the model): None without labelled nulls. A tuned encoder was
    trained on every skill's demonstrations, so for it held-out skills are not unseen requests."""
    keep = it.kinds != "pseudo"
    if not (it.kinds[keep] == "real").any():
        return None
    sub = Items([lab for lab, k in zip(it.labels, keep) if k], it.kinds[keep], it.weights[keep], it.in_scope[keep])
    return value(reweighted(sub, w_in), [d for d, k in zip(decisions, keep) if k], objective)


def metrics(it: Items, decisions: list) -> dict:
    right = np.array([d == lab for d, lab in zip(decisions, it.labels)])
    out = {"in_scope_accuracy": float(right[it.in_scope].mean()) if it.in_scope.any() else None}
    for kind in ("real", "pseudo"):
        mask = it.kinds == kind
        out[f"abstain_recall_{kind}"] = float(right[mask].mean()) if mask.any() else None
    nulls = ~it.in_scope
    out["abstain_recall"] = float((it.weights * right)[nulls].sum() / it.weights[nulls].sum()) if nulls.any() else None
    return out


# ---- the classifier -----------------------------------------------------------------------------
def calibrate(groups: list[Group]) -> tuple[float, float]:
    """(beta, temperature) minimising the negative log-likelihood of the right skill on the in-scope
    out-of-fold items."""
    labelled = []
    n_in = sum(len(g.labels) for g in groups if g.kind == "in")
    rng = np.random.default_rng(0)
    for g in groups:
        if g.kind == "in":
            col = {n: i for i, n in enumerate(g.classes)}
            y = np.array([col[lab] for lab in g.labels])
            pick = rng.random(len(y)) < CALIBRATION_ITEMS / max(n_in, CALIBRATION_ITEMS)
            labelled.append((g.scores[pick].astype(np.float32), g.knn[pick].astype(np.float32), y[pick]))

    def nll(beta: float, t: float) -> float:
        return sum(-log_softmax((d + beta * k) / t)[np.arange(len(y)), y].sum() for d, k, y in labelled)

    best = (np.inf, 0.0, 1.0)
    for beta in BETAS:  # a coarse temperature grid, then a finer one around its best
        coarse = min(TEMPERATURES[::4], key=lambda t: nll(beta, t))
        fine = coarse * np.geomspace(0.7, 1.4, 7)
        values = [(nll(beta, t), float(beta), float(t)) for t in fine]
        best = min([best, *values])
    return best[1], best[2]


def classifier_outputs(groups: list[Group], beta: float, temperature: float) -> tuple[list, np.ndarray]:
    """(top skill of every item, accept features [n, len(ACCEPT_FEATURES)])."""
    tops, feats = [], []
    for g in groups:
        logp = log_softmax((g.scores + beta * g.knn) / temperature)
        tops += [g.classes[i] for i in logp.argmax(axis=1)]
        feats.append(accept_features(logp, g.knn, g.distance))
    return tops, np.concatenate(feats)


def best_cut(scores: np.ndarray, gain_take: np.ndarray, gain_leave: np.ndarray) -> tuple[float, float]:
    """The threshold t maximising sum(gain_take[scores >= t]) + sum(gain_leave[scores < t]), placed
    midway between neighbouring scores (-inf: take all). -> (t, value)."""
    if scores.size == 0:
        return -np.inf, 0.0
    order = np.argsort(scores, kind="stable")
    s, take, leave = scores[order], gain_take[order], gain_leave[order]
    taken = np.concatenate([np.cumsum(take[::-1])[::-1], [0.0]])  # take items j..
    left = np.concatenate([[0.0], np.cumsum(leave)])  # leave items ..j-1
    total = taken + left
    valid = np.ones(len(s) + 1, bool)
    valid[1:-1] = s[1:] > s[:-1]  # equal scores cannot be split
    j = int(np.argmax(np.where(valid, total, -np.inf)))
    t = -np.inf if j == 0 else float(s[-1] + 1e-9) if j == len(s) else float((s[j - 1] + s[j]) / 2)
    return t, float(total[j])


def fit_accept(it: Items, tops: list, feats: np.ndarray, fit_logistic) -> dict:
    """Logistic P(routing the top skill is right) over ACCEPT_FEATURES, each item weighted as in the
    objective (wrong in-scope routes count as negatives with their in-scope weight)."""
    y = np.array([t == lab for t, lab in zip(tops, it.labels)], dtype=np.float64)
    w = it.weights / it.weights.sum()
    model = fit_logistic(np.nan_to_num(feats, neginf=-50.0), y, features=ACCEPT_FEATURES, weights=w, l2=1e-2)
    return model


def thresholds(it: Items, tops: list, accept: np.ndarray, seed: int = 0) -> tuple[float, dict[str, float], dict]:
    """The global accept threshold, and per-skill ones only where they win out of sample: a skill's
    own threshold is fitted on one half of its items and scored on the other (both ways); it is kept
    when that beats the global threshold on the held-out halves."""
    right = np.array([t == lab for t, lab in zip(tops, it.labels)])
    gain_take = np.where(right & it.in_scope, it.weights, 0.0)
    gain_leave = np.where(~it.in_scope, it.weights, 0.0)
    global_t, _ = best_cut(accept, gain_take, gain_leave)
    rng = np.random.default_rng(seed)
    per_skill, tried = {}, 0
    tops_arr = np.array(tops, dtype=object)
    for skill in sorted(set(tops)):
        idx = np.flatnonzero(tops_arr == skill)
        if len(idx) < MIN_PER_SKILL:
            continue
        tried += 1
        half = rng.permutation(len(idx)) % 2 == 0
        own_gain = global_gain = 0.0
        for fit_part, test_part in ((idx[half], idx[~half]), (idx[~half], idx[half])):
            t, _ = best_cut(accept[fit_part], gain_take[fit_part], gain_leave[fit_part])
            for thr, acc in ((t, "own"), (global_t, "global")):
                take = accept[test_part] >= thr
                v = gain_take[test_part][take].sum() + gain_leave[test_part][~take].sum()
                if acc == "own":
                    own_gain += v
                else:
                    global_gain += v
        if own_gain > global_gain + 1e-12:
            per_skill[skill], _ = best_cut(accept[idx], gain_take[idx], gain_leave[idx])
    # accept scores are probabilities: -inf ("take all") is 0
    clip = lambda t: float(min(max(t, 0.0), 1.0))  # noqa: E731
    return clip(global_t), {k: clip(v) for k, v in per_skill.items()}, {"tried": tried, "kept": len(per_skill)}


def classifier_decisions(tops: list, accept: np.ndarray, threshold: float, per_skill: dict) -> list:
    return [t if a >= per_skill.get(t, threshold) else None for t, a in zip(tops, accept)]


def accept_scores(model: dict, feats: np.ndarray) -> np.ndarray:
    return logistic(model, np.nan_to_num(feats, neginf=-50.0))


# ---- similarity routers -------------------------------------------------------------------------
def similarity_tops(groups: list[Group], policy: str, k_mean: int) -> tuple[list, np.ndarray]:
    """(top skill, its score) of every item under a similarity policy."""
    if policy == "max":  # the nearest demonstration: no feature table needed
        hits = [d[0] if d else (None, -np.inf) for g in groups for d in g.demo_hits]
        return [h[0] for h in hits], np.array([h[1] for h in hits], dtype=np.float64)
    tops, scores = [], []
    for g in groups:
        for d, r in zip(g.demo_hits, g.row_hits):
            c = rf.candidates(d, r, k_mean)
            if not len(c):
                tops.append(None)
                scores.append(-np.inf)
                continue
            s = rf.POLICIES[policy](c, None)
            i = int(np.argmax(s))
            tops.append(c.names[i])
            scores.append(float(s[i]))
    return tops, np.array(scores)


def similarity_decisions(tops: list, scores: np.ndarray, threshold: float, per_skill: dict | None = None) -> list:
    per_skill = per_skill or {}
    return [t if t is not None and s >= per_skill.get(t, threshold) else None for t, s in zip(tops, scores)]


def baseline_threshold(it: Items, tops: list, scores: np.ndarray) -> float:
    right = np.array([t == lab for t, lab in zip(tops, it.labels)])
    t, _ = best_cut(scores, np.where(right & it.in_scope, it.weights, 0.0), np.where(~it.in_scope, it.weights, 0.0))
    return float(max(min(t, 1.0), -1.0))
