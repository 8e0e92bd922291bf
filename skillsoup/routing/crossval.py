"""Out-of-fold data for fitting the router: every query is scored by a model that did not see it.

Three kinds of evaluation items, each in groups that share one model and one demonstration memory:
    "in"      labelled in-scope queries, 5 folds over them: the classifier of each fold is trained
              without the fold (demonstrations, skill rows and the other labelled queries). With no
              labelled queries, the folds run over the demonstrations themselves (and the fold's
              demonstrations leave the kNN memory too).
    "real"    queries labelled null, scored by the model of all skills (never trained on them).
    "pseudo"  queries no skill covers, made by holding whole skills out: 5 folds over the skills;
              the model and the memory of each fold lack the fold's skills, whose labelled queries
              and demonstrations are then "no skill" queries (requests for a skill that does not exist).
Each item keeps what every router needs: the classifier's discriminants and kNN similarities, and the
demonstration / skill-row hits that the similarity policies (the unfitted router, the baseline) read.

Sibling skills often share their demonstrations' data under another instruction ("acronym for red
oak" and "word count of red oak"; the bundled demo skills do it by design). A demonstration held out
while its twin in a sibling stays in the memory is found by its data, not its request, and the
estimates say nothing about real queries (a fit on the demo skills alone once took routing from 0.96
to 0.53). So demonstrations whose residuals (embedding minus the skill's mean: the data, not the
request) are closer than TWIN_SIMILARITY across skills are twins: they fall into the same fold, and,
when the in-scope items are demonstrations (no labelled queries), the twins of held-out skills leave
the model and the memory of that fold too. With labelled queries the in-scope items meet the whole
memory, so the "no skill" items do as well: there, a twin is a real confusable request.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skillsoup.routing.classifier import SkillClassifier, knn_similarities, train_classifier
from skillsoup.routing.index_data import retrieve_all

FOLDS = 5
TWIN_SIMILARITY = 0.6  # residual cosine of demonstrations that share their data (on public intent data ~2% do)
MAX_TWIN_SEARCH = 20_000  # demonstrations beyond which twins are not searched (the search is quadratic)


@dataclass(frozen=True)
class Examples:
    names: tuple[str, ...]  # the skills, k
    demo_x: np.ndarray  # [D, d] unit
    demo_y: np.ndarray  # [D] in [0, k)
    row_x: np.ndarray  # [k, d] skill rows (name, description, inputs), aligned with names
    query_x: np.ndarray  # [Q, d] labelled queries
    query_y: np.ndarray  # [Q] in [0, k), -1 for "no skill"


@dataclass(frozen=True)
class Group:
    kind: str  # "in", "real" or "pseudo"
    labels: list  # skill name, or None for no skill
    classes: tuple[str, ...]  # the classifier's skills for this group
    scores: np.ndarray  # [m, c] the classifier's skill scores (before kNN and temperature)
    distance: np.ndarray  # [m] squared Mahalanobis distance to the nearest skill mean
    knn: np.ndarray  # [m, c]
    demo_hits: list  # per item: [(skill, cosine)] best first
    row_hits: list


def _train(ex: Examples, keep_skill: np.ndarray, demo_mask: np.ndarray, query_mask: np.ndarray, shrink: float):
    """Classifier over the kept skills, from their demonstrations in demo_mask, their rows and the
    labelled in-scope queries in query_mask. Returns (classes idx, SkillClassifier, remap)."""
    classes = np.flatnonzero(keep_skill)
    remap = -np.ones(len(ex.names), int)
    remap[classes] = np.arange(len(classes))
    dm = demo_mask & keep_skill[ex.demo_y]
    qm = query_mask & (ex.query_y >= 0)
    qm[qm] = keep_skill[ex.query_y[qm]]
    x = np.concatenate([ex.demo_x[dm], ex.row_x[classes], ex.query_x[qm]])
    y = remap[np.concatenate([ex.demo_y[dm], classes, ex.query_y[qm]])]
    names = tuple(ex.names[i] for i in classes)
    return classes, SkillClassifier(names, ("",) * len(names), **train_classifier(x, y, len(classes), shrink)), remap


def _group(kind, ex, x, labels, trained, demo_mem, n_demos: int, n_rows: int) -> Group:
    classes, model, remap = trained
    scores, distance = model.scores_and_distance(x)
    mem_x, mem_y = ex.demo_x[demo_mem], remap[ex.demo_y[demo_mem]]
    knn = knn_similarities(x, mem_x, mem_y, len(classes), n_demos) if len(mem_x) else np.zeros_like(scores)
    names = np.array(ex.names, dtype=object)
    demo_hits = retrieve_all(x, names[ex.demo_y[demo_mem]], mem_x, n_demos)
    row_hits = retrieve_all(x, names[classes], ex.row_x[classes], n_rows)
    return Group(kind, labels, model.skills, scores, distance, knn, demo_hits, row_hits)


def twin_groups(x: np.ndarray, y: np.ndarray, threshold: float) -> np.ndarray:
    """[D] a group id per demonstration: demonstrations of different skills whose residual cosine
    reaches ``threshold`` are joined, transitively (union-find); alone, each is its own group."""
    n = len(y)
    parent = np.arange(n)
    if n > MAX_TWIN_SEARCH or n == 0:
        return parent
    sums = np.zeros((int(y.max()) + 1, x.shape[1]))
    np.add.at(sums, y, x)
    resid = x - (sums / np.maximum(np.bincount(y), 1)[:, None])[y]
    resid /= np.maximum(np.linalg.norm(resid, axis=1, keepdims=True), 1e-12)
    resid = resid.astype(np.float32)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, n, 512):
        sims = resid[start : start + 512] @ resid.T
        rows, cols = np.nonzero((sims >= threshold) & (y[start : start + 512, None] != y[None, :]))
        for a, b in zip(rows + start, cols):
            ra, rb = root(a), root(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return np.array([root(i) for i in range(n)])


def out_of_fold(ex: Examples, n_demos: int, n_rows: int, shrink: float, seed: int = 0) -> list[Group]:
    rng = np.random.default_rng(seed)
    k = len(ex.names)
    names = np.array(ex.names, dtype=object)
    all_skills = np.ones(k, bool)
    all_demos = np.ones(len(ex.demo_y), bool)
    all_queries = np.ones(len(ex.query_y), bool)
    groups = []
    in_scope = np.flatnonzero(ex.query_y >= 0)
    demo_folds = len(in_scope) < 2 * FOLDS
    twins = twin_groups(ex.demo_x, ex.demo_y, TWIN_SIMILARITY) if demo_folds else None
    if not demo_folds:  # folds over the labelled queries
        fold = np.full(len(ex.query_y), -1)
        fold[in_scope] = rng.permutation(len(in_scope)) % FOLDS
        for f in range(FOLDS):
            held = fold == f
            trained = _train(ex, all_skills, all_demos, ~held, shrink)
            groups.append(_group("in", ex, ex.query_x[held], list(names[ex.query_y[held]]), trained, all_demos,
                                 n_demos, n_rows))
    else:  # folds over the demonstrations: each is scored without itself (or its twins) in the model or the memory
        _, group = np.unique(twins, return_inverse=True)
        fold = rng.permutation(group.max() + 1)[group] % FOLDS
        for f in range(FOLDS):
            held = fold == f
            trained = _train(ex, all_skills, ~held, all_queries, shrink)
            groups.append(_group("in", ex, ex.demo_x[held], list(names[ex.demo_y[held]]), trained, ~held,
                                 n_demos, n_rows))
    nulls = ex.query_y < 0
    if nulls.any():
        trained = _train(ex, all_skills, all_demos, all_queries, shrink)
        groups.append(_group("real", ex, ex.query_x[nulls], [None] * int(nulls.sum()), trained, all_demos,
                             n_demos, n_rows))
    if k >= 3:
        skill_fold = rng.permutation(k) % min(FOLDS, k)
        for g in range(min(FOLDS, k)):
            keep = skill_fold != g
            if keep.sum() < 2:
                continue
            held_d = ~keep[ex.demo_y]
            # pseudo items meet the memory the in-scope items met: without twins when those were demonstrations
            seen = ~np.isin(twins, twins[held_d]) if demo_folds else all_demos
            trained = _train(ex, keep, seen, all_queries, shrink)
            held_q = (ex.query_y >= 0) & ~keep[np.maximum(ex.query_y, 0)]
            x = np.concatenate([ex.query_x[held_q], ex.demo_x[held_d]])
            groups.append(_group("pseudo", ex, x, [None] * len(x), trained, keep[ex.demo_y] & seen, n_demos, n_rows))
    return groups
