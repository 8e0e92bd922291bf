"""Per-skill routing features from retrieval hits, and the named aggregation policies over them.

The router (at query time, from Chroma) and the fitter (in numpy, from all rows at once) both turn
one query's hits into a :class:`Candidates` table with :func:`candidates`, so a fitted model sees
the same features in both places.

Hits are ``(skill, cosine)`` pairs, best first: the ``n`` nearest demonstrations, and the ``m``
nearest skill rows (name, description and some inputs embedded together). A skill that is absent
from a list gets that list's floor (its lowest similarity): its true similarity is at most that.

Features per candidate skill (FEATURES):
    max        highest similarity of one of its demonstrations
    mean_topk  mean of its ``k`` best demonstration similarities (missing ones count as the floor)
    skill_row  similarity to its skill row
    margin     its ``max`` minus the best ``max`` of any other candidate (the floor when alone)
    share      fraction of the 10 nearest demonstrations that are its own
    is_top     1 for the candidate with the highest ``max``, else 0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

FEATURES = ("max", "mean_topk", "skill_row", "margin", "share", "is_top")
_COL = {name: i for i, name in enumerate(FEATURES)}
SHARE_WINDOW = 10

Hits = Sequence[tuple[str, float]]


@dataclass(frozen=True)
class Candidates:
    """The skills one query could go to, with their features."""

    names: tuple[str, ...]
    features: np.ndarray  # [c, len(FEATURES)] float64

    def column(self, name: str) -> np.ndarray:
        return self.features[:, _COL[name]]

    def __len__(self) -> int:
        return len(self.names)


def candidates(demo_hits: Hits, skill_hits: Hits = (), k_mean: int = 3) -> Candidates:
    """Every skill named in either hit list, with its FEATURES (see the module docstring)."""
    per_skill: dict[str, list[float]] = {}
    for name, sim in demo_hits:
        per_skill.setdefault(name, []).append(float(sim))
    rows = dict(skill_hits)
    names = list(per_skill) + [n for n in rows if n not in per_skill]
    if not names:
        return Candidates((), np.zeros((0, len(FEATURES))))
    floor_d = min((float(s) for _, s in demo_hits), default=0.0)
    floor_s = min((float(s) for _, s in skill_hits), default=floor_d)
    window = [n for n, _ in demo_hits[:SHARE_WINDOW]]
    feats = np.zeros((len(names), len(FEATURES)))
    for i, name in enumerate(names):
        sims = sorted(per_skill.get(name, ()), reverse=True)
        best = sims[0] if sims else floor_d
        top = (sims + [floor_d] * k_mean)[:k_mean]
        feats[i, _COL["max"]] = best
        feats[i, _COL["mean_topk"]] = float(np.mean(top))
        feats[i, _COL["skill_row"]] = float(rows.get(name, floor_s))
        feats[i, _COL["share"]] = window.count(name) / max(1, len(window))
    best = feats[:, _COL["max"]]
    order = np.argsort(-best, kind="stable")
    if len(names) > 1:
        runner_up = np.where(np.arange(len(names)) == order[0], best[order[1]], best[order[0]])
    else:
        runner_up = np.array([floor_d])
    feats[:, _COL["margin"]] = best - runner_up
    feats[order[0], _COL["is_top"]] = 1.0
    return Candidates(tuple(names), feats)


# ---- policies -----------------------------------------------------------------------------------
def _logistic(c: Candidates, model: dict | None) -> np.ndarray:
    if not model:
        from skillsoup.errors import PolicyError

        raise PolicyError("policy 'logistic' needs fitted coefficients; run skillsoup fit FILE.jsonl first")
    cols = [_COL[n] for n in model["features"]]
    x = (c.features[:, cols] - np.asarray(model["mean"])) / np.asarray(model["scale"])
    return sigmoid(x @ np.asarray(model["coef"]) + float(model["bias"]))


POLICIES: dict[str, Callable[[Candidates, dict | None], np.ndarray]] = {
    "max": lambda c, _: c.column("max"),
    "mean_topk": lambda c, _: c.column("mean_topk"),
    "skill_row": lambda c, _: c.column("skill_row"),
    "max_skill_row": lambda c, _: 0.5 * (c.column("max") + c.column("skill_row")),
    "logistic": _logistic,
}
# scores on the cosine scale; "logistic" gives probabilities
SIMILARITY_POLICIES = ("max", "mean_topk", "skill_row", "max_skill_row")
NEEDS_SKILL_ROWS = ("skill_row", "max_skill_row", "logistic")


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))  # overflow-free


def weight_logits(scores: np.ndarray, policy: str) -> np.ndarray:
    """What the softmax runs over: log-probabilities for ``logistic`` (so T = 1 gives weights
    proportional to p), the similarity itself otherwise."""
    if policy == "logistic":
        return np.log(np.clip(scores, 1e-12, 1.0))
    return np.asarray(scores, dtype=np.float64)


def softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = np.exp(z - z.max())
    return z / z.sum()


def confidence(score: float) -> float:
    """A [0, 1] confidence for a decision with this top score: the probability for ``logistic``;
    for similarity policies the similarity clipped to [0, 1] (not calibrated: ECE says by how much)."""
    return float(np.clip(score, 0.0, 1.0))


def best_first(values: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest values, largest first, ties by lower index: ``np.argsort(-values,
    kind="stable")[:n]`` without sorting all values (the classifier scores every skill, 10,000 in a
    large registry)."""
    if n >= len(values):
        return np.argsort(-values, kind="stable")
    cut = -np.partition(-values, n - 1)[n - 1]  # the n-th largest value
    above = np.flatnonzero(values > cut)
    pick = np.concatenate([above, np.flatnonzero(values == cut)[: n - len(above)]])  # ties at the cut: lowest index
    return pick[np.lexsort((pick, -values[pick]))]
