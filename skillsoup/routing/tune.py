"""``fit --tune-encoder``: tune the text encoder on the skills' examples, keep it only where it wins.

The labelled queries are split in two halves, each skill's queries (and the nulls) half and half:
    1. a probe: a copy of the base encoder (the registry's, or the one a tuned registry was tuned
       from) tuned on every committed skill's demonstrations and the learning half's in-scope
       queries (routing/encoder_tuning.py), in a staging folder
    2. the router fitted with each encoder (the registry's current one, the base if that differs, the
       probe) on the judging half alone, out of fold, without saving (routing/fit.py)
    3. judged there on the labelled queries: in-scope queries and labelled nulls. The queries of
       skills held out of the model are left out of this judgement because the probe has seen those
       skills' demonstrations. With fewer than MIN_NULLS labelled nulls in the judging half,
       abstention cannot be judged: the probe must then win on in-scope accuracy and keep the
       held-out skills' abstain recall
    4. when the probe wins, the encoder the registry keeps is tuned again from the base on the
       demonstrations and every labelled in-scope query (the probe's recipe on all the data; the
       probe's score is a conservative estimate of it), and the registry switches to it
       (registry/encoders.py: every row re-embedded; stored as REGISTRY/encoders/VERSION); when the
       base wins, the registry switches back to it. Then the router is fitted on all the labelled
       queries and saved on the registry's own vectors, as ``fit`` does
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

from skillsoup.errors import LabelledDataError, RoutingError
from skillsoup.registry import encoders
from skillsoup.routing.encoder_tuning import TuningResult, TuningSettings, tune_encoder
from skillsoup.routing.fit import FitReport, fit
from skillsoup.routing.metrics import LabelledQuery, as_labelled
from skillsoup.routing.router import Router

log = logging.getLogger(__name__)

MIN_NULLS = 10  # labelled nulls in the judging half needed to judge abstention on real requests
MARGIN = 0.002  # a new encoder must win by this much: re-embedding for noise is churn


@dataclass(frozen=True)
class EncoderTrial:
    label: str  # "current", "base" or "tuned"
    encoder: str  # the embedder's name ("tuned probe" for the candidate)
    report: FitReport  # the out-of-fold fit on the judging half with this encoder (not saved)

    @property
    def chosen(self) -> dict:
        return self.report.routers[self.report.chosen]

    @property
    def judged(self) -> float:
        """The objective on the labelled queries alone, or in-scope accuracy without enough nulls."""
        value = self.chosen.get("objective_labelled")
        return self.chosen["in_scope_accuracy"] if value is None else value


@dataclass(frozen=True)
class TuneReport:
    trials: list[EncoderTrial]
    kept: str  # label of the trial kept
    encoder: str  # the registry's encoder now
    probe: TuningResult  # the tuning judged (demonstrations + the learning half)
    tuning: TuningResult | None  # the tuning kept (demonstrations + every labelled query); None: not kept
    fit: FitReport  # the router fitted and saved on the registry's vectors
    reembedded: int  # rows re-embedded by a switch (0: none)
    abstention_judged: bool  # enough labelled nulls in the judging half to judge abstention
    judged_on: int  # labelled queries in the judging half


def split_halves(items: list[LabelledQuery], seed: int = 0) -> tuple[list[LabelledQuery], list[LabelledQuery]]:
    """(learn, judge): each skill's queries, and the nulls, shuffled and dealt alternately (the
    judging half gets the odd one), so both halves cover every skill."""
    by_label: dict[str | None, list[LabelledQuery]] = defaultdict(list)
    for it in items:
        by_label[it.skill].append(it)
    rng = random.Random(seed)
    learn, judge = [], []
    for label in sorted(by_label, key=lambda s: (s is not None, s or "")):
        group = by_label[label]
        rng.shuffle(group)
        judge += group[0::2]
        learn += group[1::2]
    return learn, judge


def with_queries(demos: dict[str, list[str]], items: list[LabelledQuery]) -> dict[str, list[str]]:
    """Each skill's demonstration inputs followed by its labelled in-scope queries."""
    out = {name: list(texts) for name, texts in demos.items()}
    for it in items:
        if it.skill in out:
            out[it.skill].append(it.query)
    return out


def fit_tuned(router: Router, labelled, objective: str = "balanced", settings: TuningSettings = TuningSettings(),
              progress: Callable[[int, int, str], None] | None = None) -> TuneReport:
    """The module docstring's steps 1-4. ``labelled``: a JSONL path or LabelledQuery values (needed:
    half of them judge the probe). ``progress(step, steps, label)`` after every tuning step."""
    registry = router.registry
    registry.check_writable("store a tuned encoder")
    items = as_labelled(labelled, registry.names()) if labelled is not None else []
    if not items:
        raise LabelledDataError("--tune-encoder needs labelled queries to learn from and to judge the tuned encoder on: "
                                'pass a JSONL file of {"query": ..., "skill": NAME or null} lines')
    current = registry.embedder
    base_name = encoders.info(registry.path, current.name).get("base", current.name)
    base = current if base_name == current.name else _embedder(base_name)
    folder = getattr(base, "source_folder", None)
    if folder is None:
        raise RoutingError(f"encoder tuning starts from a local sentence-transformers folder; the registry's encoder "
                           f"{base_name!r} is not one (download it and use its folder, or the default all-MiniLM-L6-v2)")
    skills = registry.index.get_skills()
    demos = {name: [d.input for d in row.skill.demonstrations] for name, row in skills.items()}
    learn, judge = split_halves(items, settings.seed)
    judged_nulls = sum(it.skill is None for it in judge) >= MIN_NULLS
    staged = encoders.staging(registry.path)
    tuning, reembedded = None, 0
    try:
        probe = tune_encoder(folder, with_queries(demos, learn), staged, settings, _phase(progress, "probe"))
        candidate = _embedder(staged, "tuned probe")
        trials = [_trial(router, judge, objective, "current", None, current.name)]
        if base is not current:
            trials.append(_trial(router, judge, objective, "base", base, base_name))
        trials.append(_trial(router, judge, objective, "tuned", candidate, candidate.name))
        kept = _decide(trials, judged_nulls)
        if kept.label == "tuned":
            encoders.discard(staged)
            staged = encoders.staging(registry.path)
            tuning = tune_encoder(folder, with_queries(demos, items), staged, settings, _phase(progress, "final"))
            record = _record(base_name, skills, probe, tuning, trials, objective,
                             sum(it.skill in demos for it in items), len(judge))
            name = encoders.publish(registry.path, staged, record)
            staged = None
            reembedded = encoders.switch(registry, name)
        elif kept.label == "base":
            reembedded = encoders.switch(registry, base_name)
    finally:
        encoders.discard(staged)
    final = fit(router, items, objective=objective)
    log.info("encoder tuning: kept the %s encoder (%s); judged on %d labelled queries: %s", kept.label,
             registry.embedder.name, len(judge), ", ".join(f"{t.label} {t.judged:.3f}" for t in trials))
    return TuneReport(trials, kept.label, registry.embedder.name, probe, tuning, final, reembedded, judged_nulls,
                      len(judge))


def _phase(progress, label: str):
    return None if progress is None else (lambda done, total, loss: progress(done, total, f"{label}, loss {loss:.3f}"))


def _embedder(name_or_folder, name: str | None = None):
    from skillsoup.embedding import TextEmbedder, get_embedder

    return TextEmbedder(name_or_folder, name=name) if name else get_embedder(name_or_folder)


def _trial(router: Router, items, objective: str, label: str, encoder, name: str) -> EncoderTrial:
    return EncoderTrial(label, name, fit(router, items, save=False, objective=objective, encoder=encoder))


def _decide(trials: list[EncoderTrial], abstention_judged: bool) -> EncoderTrial:
    """The current encoder unless another one wins by MARGIN (module docstring, step 3)."""
    best = trials[0]
    for trial in trials[1:]:
        if abstention_judged:
            wins = trial.judged > best.judged + MARGIN
        else:
            held_out = (trial.chosen.get("abstain_recall_pseudo") or 0.0, best.chosen.get("abstain_recall_pseudo") or 0.0)
            wins = trial.chosen["in_scope_accuracy"] > best.chosen["in_scope_accuracy"] + MARGIN and held_out[0] >= held_out[1]
        if wins:
            best = trial
    return best


def _record(base_name: str, skills: dict, probe: TuningResult, tuning: TuningResult, trials: list[EncoderTrial],
            objective: str, queries: int, judged_on: int) -> dict:
    """What tuning.json says: where the encoder comes from, what it was tuned on and how it was judged."""
    content = "\n".join(f"{name}:{row.content_hash}" for name, row in sorted(skills.items()))
    return {"base": base_name, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "skills": len(skills),
            "demonstrations": sum(len(r.skill.demonstrations) for r in skills.values()),
            "labelled_queries": queries,
            "skills_sha256": hashlib.sha256(content.encode()).hexdigest(), "pairs": tuning.pairs, "steps": tuning.steps,
            "seconds": round(tuning.seconds, 1), "loss_first": tuning.loss_first, "loss_last": tuning.loss_last,
            "settings": tuning.settings, "objective": objective,
            "probe": {"pairs": probe.pairs, "steps": probe.steps, "seconds": round(probe.seconds, 1)},
            "judged_on": judged_on,
            "judged": {t.label: {"encoder": t.encoder, "value": t.judged, **{k: t.chosen.get(k) for k in (
                "in_scope_accuracy", "abstain_recall_real", "abstain_recall_pseudo")}} for t in trials}}
