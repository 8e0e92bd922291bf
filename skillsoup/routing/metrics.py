"""Labelled queries (JSONL) and routing metrics.

A labelled file has one JSON object per line: ``{"query": "...", "skill": "NAME"}``, or
``"skill": null`` when no skill should be used. Blank lines are skipped; anything else that is wrong
raises LabelledDataError naming ``file:line``.

Metrics of a router's decisions (its top skill, or "none" when it abstains):
    in_scope_accuracy   share of queries with a skill label whose decision is that skill
    abstain_recall      share of "none" queries on which the router abstained
    abstain_precision   share of abstentions whose label is "none"
    macro_f1            F1 averaged over the classes (every skill, and "none") seen in labels or decisions
    ece                 expected calibration error over 10 equal-width confidence bins; the confidence
                        of a decision is its score as a probability (``policies.confidence``),
                        of an abstention 1 minus the best score
    n, p50_ms, p95_ms   queries, and the latency of ``Router.route`` called one query at a time
                        (query embedding included) on up to ``latency_sample`` of them
A metric with nothing to measure (e.g. abstain_precision without abstentions) is None.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skillsoup.errors import LabelledDataError
from skillsoup.routing import policies as rf
from skillsoup.routing.router import MAX_QUERY_CHARS

if TYPE_CHECKING:
    from skillsoup.routing.router import Router

KEYS = ("in_scope_accuracy", "abstain_recall", "abstain_precision", "macro_f1", "ece", "n", "p50_ms", "p95_ms")
MAX_LABELLED_BYTES = 64 * 2**20


@dataclass(frozen=True)
class LabelledQuery:
    query: str
    skill: str | None  # None: no skill should be used
    where: str = ""  # file:line it came from


def read_labelled(path: str | os.PathLike) -> list[LabelledQuery]:
    path = Path(path)
    try:
        if path.stat().st_size > MAX_LABELLED_BYTES:
            raise LabelledDataError(f"{path} is over {MAX_LABELLED_BYTES // 2**20} MiB; split it")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LabelledDataError(f"{path} does not exist; give a JSONL file of {{\"query\": ..., \"skill\": ...}} lines") from None
    except IsADirectoryError:
        raise LabelledDataError(f"{path} is a folder; give a JSONL file") from None
    except UnicodeDecodeError:
        raise LabelledDataError(f"{path} is not UTF-8 text; give a JSONL file") from None
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            out.append(_parse(line, f"{path}:{number}"))
    if not out:
        raise LabelledDataError(f"{path} holds no labelled queries; write one JSON object per line")
    return out


def _parse(line: str, where: str) -> LabelledQuery:
    try:
        obj = json.loads(line)
    except ValueError as exc:
        raise LabelledDataError(f"{where}: not valid JSON ({exc.msg}); write one JSON object per line") from None
    if not isinstance(obj, dict):
        raise LabelledDataError(f"{where}: expected an object like {{\"query\": \"...\", \"skill\": \"NAME\" or null}}")
    return _item(obj, where)


LABELLED_KEYS = ("query", "skill")


def _item(obj: dict, where: str) -> LabelledQuery:
    query, skill = obj.get("query"), obj.get("skill", ...)
    # other keys are allowed (ids, notes), but named when "query" or "skill" is missing: likely misspelt
    others = [k for k in obj if k not in LABELLED_KEYS]
    hint = f" (the line has {', '.join(map(repr, others))})" if others else ""
    if "query" not in obj:
        raise LabelledDataError(f"{where}: missing \"query\" (the request text){hint}")
    if not isinstance(query, str) or not query.strip():
        raise LabelledDataError(f"{where}: \"query\" must be a non-empty string")
    if len(query) > MAX_QUERY_CHARS:
        raise LabelledDataError(f"{where}: the query has {len(query):,} characters; the limit is {MAX_QUERY_CHARS:,}")
    if skill is ...:
        raise LabelledDataError(f"{where}: missing \"skill\" (a skill name, or null when no skill should be used){hint}")
    if skill is not None and (not isinstance(skill, str) or not skill):
        raise LabelledDataError(f"{where}: \"skill\" must be a skill name or null, got {skill!r}")
    return LabelledQuery(query, skill, where)


def as_labelled(labelled, known_skills: Iterable[str] | None = None) -> list[LabelledQuery]:
    """A path, or LabelledQuery values / dicts, -> checked LabelledQuery values (names must exist
    when ``known_skills`` is given)."""
    if isinstance(labelled, (str, os.PathLike)):
        items = read_labelled(labelled)
    else:
        items = [x if isinstance(x, LabelledQuery) else _item(dict(x), f"item {i}") for i, x in enumerate(labelled)]
        if not items:
            raise LabelledDataError("no labelled queries given")
    if known_skills is not None:
        known = set(known_skills)
        for it in items:
            if it.skill is not None and it.skill not in known:
                raise LabelledDataError(
                    f"{it.where}: unknown skill {it.skill!r}; the registry has {len(known)} skills (skillsoup skills list)"
                )
    return items


# ---- metrics ------------------------------------------------------------------------------------
def decision_metrics(labels: Sequence[str | None], decisions: Sequence[str | None],
                     confidences: Sequence[float]) -> dict:
    labels, decisions = list(labels), list(decisions)
    in_scope = [(lab, dec) for lab, dec in zip(labels, decisions) if lab is not None]
    nones = [dec for lab, dec in zip(labels, decisions) if lab is None]
    abstained = [lab for lab, dec in zip(labels, decisions) if dec is None]
    f1s = []
    for cls in set(labels) | set(decisions):
        tp = sum(1 for lab, dec in zip(labels, decisions) if lab == cls and dec == cls)
        fp = sum(1 for lab, dec in zip(labels, decisions) if lab != cls and dec == cls)
        fn = sum(1 for lab, dec in zip(labels, decisions) if lab == cls and dec != cls)
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    correct = np.array([lab == dec for lab, dec in zip(labels, decisions)], dtype=np.float64)
    return {
        "in_scope_accuracy": _mean([lab == dec for lab, dec in in_scope]),
        "abstain_recall": _mean([dec is None for dec in nones]),
        "abstain_precision": _mean([lab is None for lab in abstained]),
        "macro_f1": float(np.mean(f1s)) if f1s else None,
        "ece": expected_calibration_error(np.asarray(confidences, dtype=np.float64), correct),
        "n": len(labels),
    }


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 10) -> float | None:
    if confidence.size == 0:
        return None
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def _mean(values: list) -> float | None:
    return float(np.mean(values)) if values else None


# ---- evaluating a router ------------------------------------------------------------------------
def evaluate(router: Router, labelled, baseline: bool = True, latency_sample: int = 200,
             kind: str = "text", examples=None) -> dict:
    """Metrics (``KEYS``) of ``router`` on labelled queries; with ``baseline``, the same for the
    nearest-neighbour-threshold baseline under ``"baseline"``. Text routing embeds all queries in one
    batch and retrieves each from the index once for both routers; latency is measured separately."""
    items = as_labelled(labelled, router.registry.names())
    labels = [it.skill for it in items]
    routers = {"router": router, "baseline": router.baseline()} if baseline else {"router": router}
    decided: dict[str, tuple[list, list]] = {k: ([], []) for k in routers}
    if kind == "text":
        embeddings = router.embed([it.query for it in items])
        for emb in embeddings:
            retrieval = router.retrieve(emb)
            for key, r in routers.items():
                _record(decided[key], r.decide(retrieval), *_confidence_scores(r, retrieval))
    else:
        for it in items:
            matches = router.route(it.query, router=kind, examples=examples)
            _record(decided["router"], matches, np.array([m.score for m in matches]))
        if baseline:
            for emb in router.embed([it.query for it in items]):
                retrieval = routers["baseline"].retrieve(emb)
                _, scores = routers["baseline"].scores(retrieval)
                _record(decided["baseline"], routers["baseline"].decide(retrieval), scores)
    out = {}
    for key, r in routers.items():
        metrics = decision_metrics(labels, *decided[key])
        metrics.update(latency(r, [it.query for it in items], latency_sample, kind if key == "router" else "text", examples))
        metrics["policy"] = "nn-threshold" if key == "baseline" else r.params.policy
        metrics["threshold"] = r.params.threshold
        out[key] = metrics
    result = dict(out["router"], router=kind, fitted=bool(router.params.fitted), settings_version=router.settings_version,
                  encoder=router.registry.embedder.name)
    if baseline:
        result["baseline"] = out["baseline"]
    return result


def _confidence_scores(router: Router, retrieval) -> tuple[np.ndarray, float | None]:
    """(scores, accept probability): the classifier's confidence in routing is its accept model's."""
    if router.params.policy == "classifier":
        _, probs, accept = router.classify(retrieval)
        return probs, accept
    return router.scores(retrieval)[1], None


def _record(into: tuple[list, list], matches, scores: np.ndarray, accept: float | None = None) -> None:
    decisions, confidences = into
    best = float(np.max(scores)) if len(scores) else 0.0
    if matches:
        decisions.append(matches[0].name)
        confidences.append(rf.confidence(matches[0].score if accept is None else accept))
    else:
        decisions.append(None)
        confidences.append(1.0 - rf.confidence(best if accept is None else accept))


def latency(router: Router, queries: list[str], sample: int, kind: str = "text", examples=None) -> dict:
    """p50 / p95 of single-query ``route`` calls (after one warm-up call) on an even sample."""
    if not queries or sample <= 0:
        return {"p50_ms": None, "p95_ms": None}
    picked = queries[:: max(1, len(queries) // sample)][:sample]
    router.route(picked[0], router=kind, examples=examples)
    times = []
    for q in picked:
        t0 = time.perf_counter()
        router.route(q, router=kind, examples=examples)
        times.append((time.perf_counter() - t0) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95))}
