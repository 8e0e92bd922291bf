"""``fit --tune-encoder``: tune the text encoder on the demonstrations, keep it only where it wins.

    1. tune a copy of the base encoder (the registry's, or the one a tuned registry was tuned from)
       on every committed skill's demonstrations (routing/encoder_tuning.py), in a staging folder
    2. fit the router with each encoder (the registry's current one, the base if that differs, the
       tuned candidate) on the same labelled queries, out of fold, without saving (routing/fit.py)
    3. judge them on the labelled queries alone: in-scope queries and labelled nulls. The queries of
       skills held out of the model are left out of this judgement because the tuned encoder has
       seen those skills' demonstrations. With fewer than MIN_NULLS labelled nulls abstention cannot
       be judged: the tuned encoder must then win on in-scope accuracy and keep the held-out skills'
       abstain recall
    4. switch the registry to the winner when it is not the current encoder (registry/encoders.py:
       every row re-embedded; the tuned encoder stored as REGISTRY/encoders/VERSION), then fit and
       save the router on the registry's own vectors, as ``fit`` does
"""

from __future__ import annotations

import copy
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from skillsoup.errors import LabelledDataError, RoutingError
from skillsoup.registry import encoders
from skillsoup.routing.encoder_tuning import TuningResult, TuningSettings, tune_encoder
from skillsoup.routing.fit import FitReport, fit
from skillsoup.routing.metrics import as_labelled
from skillsoup.routing.router import Router

log = logging.getLogger(__name__)

MIN_NULLS = 20  # labelled nulls needed to judge abstention on real requests
MARGIN = 0.002  # a new encoder must win by this much: re-embedding for noise is churn


@dataclass(frozen=True)
class EncoderTrial:
    label: str  # "current", "base" or "tuned"
    encoder: str  # the embedder's name ("tuned candidate" before it is stored)
    report: FitReport  # the out-of-fold fit with this encoder (not saved)

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
    tuning: TuningResult
    fit: FitReport  # the router fitted and saved on the registry's vectors
    reembedded: int  # rows re-embedded by a switch (0: none)
    abstention_judged: bool  # enough labelled nulls to judge abstention


def fit_tuned(router: Router, labelled, objective: str = "balanced", settings: TuningSettings = TuningSettings(),
              progress: Callable[[int, int, float], None] | None = None) -> TuneReport:
    """The module docstring's steps 1-4. ``labelled``: a JSONL path or LabelledQuery values (needed:
    they judge the tuned encoder)."""
    registry = router.registry
    registry.check_writable("store a tuned encoder")
    items = as_labelled(labelled, registry.names()) if labelled is not None else []
    if not items:
        raise LabelledDataError("--tune-encoder needs labelled queries to judge the tuned encoder on: pass a JSONL "
                                'file of {"query": ..., "skill": NAME or null} lines')
    current = registry.embedder
    base_name = encoders.info(registry.path, current.name).get("base", current.name)
    base = current if base_name == current.name else _embedder(base_name)
    folder = getattr(base, "source_folder", None)
    if folder is None:
        raise RoutingError(f"encoder tuning starts from a local sentence-transformers folder; the registry's encoder "
                           f"{base_name!r} is not one (download it and use its folder, or the default all-MiniLM-L6-v2)")
    skills = registry.index.get_skills()
    demos = {name: [d.input for d in row.skill.demonstrations] for name, row in skills.items()}
    staged = encoders.staging(registry.path)
    try:
        tuning = tune_encoder(folder, demos, staged, settings, progress)
        candidate = _embedder(staged, "tuned candidate")
        trials = [_trial(router, items, objective, "current", None, current.name)]
        if base is not current:
            trials.append(_trial(router, items, objective, "base", base, base_name))
        trials.append(_trial(router, items, objective, "tuned", candidate, candidate.name))
        n_null = sum(it.skill is None for it in items)
        kept = _decide(trials, n_null >= MIN_NULLS)
        reembedded = 0
        if kept.label == "tuned":
            record = _record(base_name, skills, tuning, trials, objective)
            name = encoders.publish(registry.path, staged, record)
            staged = None
            reembedded = encoders.switch(registry, name)
        elif kept.label == "base":
            reembedded = encoders.switch(registry, base_name)
    finally:
        encoders.discard(staged)
    final = fit(router, items, objective=objective)
    log.info("encoder tuning: kept the %s encoder (%s); judged %s", kept.label, registry.embedder.name,
             ", ".join(f"{t.label} {t.judged:.3f}" for t in trials))
    return TuneReport(trials, kept.label, registry.embedder.name, tuning, final, reembedded, n_null >= MIN_NULLS)


def _embedder(name_or_folder, name: str | None = None):
    from skillsoup.embedding import TextEmbedder, get_embedder

    return TextEmbedder(name_or_folder, name=name) if name else get_embedder(name_or_folder)


def _trial(router: Router, items, objective: str, label: str, encoder, name: str) -> EncoderTrial:
    """One encoder fitted out of fold, on a copy of the router: ``fit`` hands its router what it
    chose even unsaved, and the final fit must compare against the router the user had (a trial's
    baseline, fitted on another encoder's similarities, once stood in for "unfitted" there)."""
    return EncoderTrial(label, name, fit(copy.copy(router), items, save=False, objective=objective, encoder=encoder))


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


def _record(base_name: str, skills: dict, tuning: TuningResult, trials: list[EncoderTrial], objective: str) -> dict:
    """What tuning.json says: where the encoder comes from, what it was tuned on and how it was judged."""
    content = "\n".join(f"{name}:{row.content_hash}" for name, row in sorted(skills.items()))
    return {"base": base_name, "at": time.strftime("%Y-%m-%dT%H:%M:%S"), "skills": len(skills),
            "demonstrations": sum(len(r.skill.demonstrations) for r in skills.values()),
            "skills_sha256": hashlib.sha256(content.encode()).hexdigest(), "pairs": tuning.pairs, "steps": tuning.steps,
            "seconds": round(tuning.seconds, 1), "loss_first": tuning.loss_first, "loss_last": tuning.loss_last,
            "settings": tuning.settings, "objective": objective,
            "judged": {t.label: {"encoder": t.encoder, "value": t.judged, **{k: t.chosen.get(k) for k in (
                "in_scope_accuracy", "abstain_recall_real", "abstain_recall_pseudo")}} for t in trials}}
