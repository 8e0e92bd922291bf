"""Results of ``skillsoup eval icl`` (plain dataclasses with ``to_dict``) and their markdown table.

Kept free of torch so that reading or rendering a report is cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from skillsoup.errors import ICLEvalError, PlotUnavailableError  # noqa: F401  (re-exported)

METHODS = ("zero-shot", "prompt", "state", "mean-mix", "decay-mix", "router")
K_METHODS = ("prompt", "state", "mean-mix", "decay-mix")  # one score per k; zero-shot and router have one


@dataclass
class MethodScore:
    method: str
    k: int  # demonstrations behind the prompt or state (0 for zero-shot; the skill's all for router)
    accuracy: float  # exact match of the greedy answer
    nll: float  # mean negative log-likelihood per expected-output token, nats
    n: int  # test pairs
    agree_with_prompt: float | None = None  # share of answers identical to the k-shot prompt's
    nll_gap: float | None = None  # nll minus the k-shot prompt's nll
    state_error: float | None = None  # decay-mix: relative distance to the one-pass state
    routed_to_skill: float | None = None  # router: share of queries whose top match is this skill

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SkillReport:
    name: str
    n_demos: int  # demonstrations available to the prompts and states
    n_tests: int
    tests_from: str  # "tests" (the skill's tests: section) or "split" (held-out demonstrations)
    ks: list[int]
    scores: list[MethodScore] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)  # a few wrong answers, for reading

    def score(self, method: str, k: int | None = None) -> MethodScore | None:
        return next((s for s in self.scores if s.method == method and (k is None or s.k == k)), None)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scores"] = [s.to_dict() for s in self.scores]
        return d


@dataclass
class ICLReport:
    model: str
    methods: list[str]
    ks: list[int]
    skills: list[SkillReport]
    notes: list[str] = field(default_factory=list)  # methods skipped and why
    settings: dict = field(default_factory=dict)  # n_tests, split, seed, mix_sets, max_new_tokens, router
    seconds: float = 0.0

    @property
    def mean(self) -> list[MethodScore]:
        return mean_scores(self.skills)

    def to_dict(self) -> dict:
        return {"model": self.model, "methods": self.methods, "ks": self.ks, "settings": self.settings,
                "seconds": self.seconds, "notes": self.notes, "mean": [s.to_dict() for s in self.mean],
                "skills": [s.to_dict() for s in self.skills]}


def _avg(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def mean_scores(skills: Sequence[SkillReport]) -> list[MethodScore]:
    """Per (method, k): the unweighted mean over the skills that have it (skills count equally)."""
    keys: dict[tuple[str, int], list[MethodScore]] = {}
    for skill in skills:
        for s in skill.scores:
            keys.setdefault((s.method, s.k), []).append(s)
    out = []
    for (method, k), group in keys.items():
        out.append(MethodScore(
            method, k, _avg([s.accuracy for s in group]), _avg([s.nll for s in group]), sum(s.n for s in group),
            _avg([s.agree_with_prompt for s in group]), _avg([s.nll_gap for s in group]),
            _avg([s.state_error for s in group]), _avg([s.routed_to_skill for s in group]),
        ))
    return out


def label(score: MethodScore) -> str:
    return score.method if score.method in ("zero-shot", "router") else f"{score.method} k={score.k}"


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown_table(report: ICLReport) -> str:
    """Rows: skills and their mean; columns: each method (and k), cell "accuracy / NLL"."""
    columns = [(s.method, s.k) for s in report.mean]
    header = ["skill"] + [label(s) for s in report.mean]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * len(columns) + "|"]

    def cells(scores: dict[tuple[str, int], MethodScore]) -> list[str]:
        return [f"{_fmt(scores[c].accuracy)} / {_fmt(scores[c].nll)}" if c in scores else "-" for c in columns]

    for skill in report.skills:
        lines.append("| " + " | ".join([skill.name] + cells({(s.method, s.k): s for s in skill.scores})) + " |")
    mean = {(s.method, s.k): s for s in report.mean}
    lines.append("| **mean** | " + " | ".join(f"**{c}**" for c in cells(mean)) + " |")
    return "\n".join(lines)


def structure_lines(report: ICLReport) -> list[str]:
    """One line per structural check: stored state vs k-shot prompt, decay state vs one pass."""
    lines = []
    for s in report.mean:
        if s.method == "state" and s.agree_with_prompt is not None:
            lines.append(f"state k={s.k} == {s.k}-shot prompt: identical answers on {s.agree_with_prompt:.1%}, "
                         f"NLL gap {s.nll_gap:+.2e}")
        if s.method == "decay-mix" and s.state_error is not None:
            lines.append(f"decay-mix k={s.k}: relative state error vs one pass {s.state_error:.2e}")
    return lines
