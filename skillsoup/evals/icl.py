"""In-context evaluation: is a stored or mixed state as good as putting the demonstrations in the prompt?

For each skill (its demonstrations, and held-out pairs: its ``tests:`` or a split of its
demonstrations) and each method, greedy exact-match accuracy and the teacher-forced NLL per
expected-output token (``icl_eval_decode``):

    zero-shot   the query alone
    prompt      k demonstrations in the prompt: encode(demos) + encode(query)
    state       the state captured from the same k demonstrations, injected before the query
                (the same computation in two pieces: answers and NLL must match the prompt's)
    mean-mix    the mean of states captured from ``mix_sets`` disjoint parts of those k
                demonstrations: does mixing several sets beat one set?
    decay-mix   per-demonstration chunk states composed with the recurrence's decay
                (skillsoup.states.decay; exact for one layer); also how far it is from one pass.
                Recurrent-only models; skipped with a note for hybrids
    router      the state the registry's router picks from the query alone, mixed as the runtime does

Results are dataclasses in ``icl_eval_report``; ``skillsoup eval icl`` renders them.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from skillsoup.evals.cases import Case, make_case, score_cases, target_text
from skillsoup.evals.report import (
    K_METHODS,
    METHODS,
    ICLEvalError,
    ICLReport,
    MethodScore,
    PlotUnavailableError,
    SkillReport,
)
from skillsoup.models.chunks import capture_chunks
from skillsoup.skills.skill import Skill
from skillsoup.states.decay import mix_decay
from skillsoup.states.mixing import mix
from skillsoup.states.state import SkillState, relative_state_error

__all__ = ["DEFAULT_KS", "ICLEvalError", "ICLReport", "METHODS", "MethodScore", "PlotUnavailableError",
           "SkillReport", "check_inputs", "decay_state", "evaluate", "parse_ks", "parse_methods", "prepare_skills", "router_picker"]

log = logging.getLogger(__name__)

DEFAULT_KS = (0, 1, 4, 8, 32)
# query -> (state to answer from, skill whose template renders the query, name of the top match or None)
Picker = Callable[[str], tuple[SkillState, Skill, "str | None"]]


# ---- input --------------------------------------------------------------------------------------
def parse_ks(text: str) -> list[int]:
    """"0,1,4" -> [0, 1, 4] (sorted, unique); a typed error for anything else."""
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise ICLEvalError(f"--k {text!r}: write demonstration counts separated by commas, e.g. --k 0,1,4,8") from None
    if not ks or ks[0] < 0:
        raise ICLEvalError(f"--k {text!r}: give at least one count, each 0 or more, e.g. --k 0,1,4,8")
    return ks


def parse_methods(text: str) -> list[str]:
    """"state,prompt" or "all" -> methods in their canonical order."""
    names = {m.strip() for m in text.split(",") if m.strip()}
    if "all" in names:
        return list(METHODS)
    unknown = sorted(names - set(METHODS))
    if unknown or not names:
        raise ICLEvalError(f"--methods {text!r}: choose from {', '.join(METHODS)} (comma-separated) or all")
    return [m for m in METHODS if m in names]


def prepare_skills(skills: Sequence[Skill], n_tests: int | None = None, split: float | None = None,
                   seed: int = 0) -> list[tuple[Skill, str]]:
    """Each skill with the tests it will be scored on -> [(skill, "tests" | "split")].

    A skill without ``tests:`` holds out a ``split`` fraction of its demonstrations (chosen with
    ``seed``; the rest keep their order and feed the prompts and states). ``n_tests`` keeps that
    many tests, drawn with ``seed``."""
    if split is not None and not 0 < split < 1:
        raise ICLEvalError(f"--split {split}: give the held-out fraction of demonstrations, between 0 and 1")
    if n_tests is not None and n_tests < 1:
        raise ICLEvalError(f"--n-tests {n_tests}: give at least 1")
    if not skills:
        raise ICLEvalError("no skills to evaluate; pass skill files or folders")
    out = []
    for skill in skills:
        source = "tests"
        if not skill.tests:
            if split is None:
                raise ICLEvalError(f"skill {skill.name!r} ({skill.source or 'no file'}) has no tests: section; "
                                   "add held-out pairs under tests: or pass --split 0.25 to hold out demonstrations")
            n = len(skill.demonstrations)
            held = set(random.Random(f"{seed}:{skill.name}").sample(range(n), round(n * split)))
            if not held or len(held) == n:
                raise ICLEvalError(f"skill {skill.name!r}: --split {split} of {n} demonstrations leaves no tests "
                                   "or no demonstrations; change --split or add tests: to the skill")
            skill = replace(skill, demonstrations=tuple(d for i, d in enumerate(skill.demonstrations) if i not in held),
                            tests=tuple(skill.demonstrations[i] for i in sorted(held)))
            source = "split"
        if n_tests is not None and n_tests < len(skill.tests):
            keep = sorted(random.Random(f"{seed}:{skill.name}:tests").sample(range(len(skill.tests)), n_tests))
            skill = replace(skill, tests=tuple(skill.tests[i] for i in keep))
        out.append((skill, source))
    return out


def skill_ks(skill: Skill, ks: Sequence[int], cap: bool) -> list[int]:
    """The k values this skill is scored at; ``cap`` drops those over its demonstrations (adding
    the count it has) instead of raising."""
    n = len(skill.demonstrations)
    if not cap and ks and max(ks) > n:
        raise ICLEvalError(f"skill {skill.name!r} has {n} demonstrations (after any --split) but --k asks for "
                           f"{max(ks)}; lower --k or add demonstrations")
    return sorted({min(k, n) for k in ks})


# ---- states -------------------------------------------------------------------------------------
def capture_demos(model, skill: Skill, demos) -> SkillState:
    return model.capture(model.encode("".join(skill.render_demonstration(d) for d in demos)))


def split_sets(n: int, parts: int) -> list[range]:
    """0..n-1 cut into ``min(parts, n)`` contiguous, disjoint ranges whose sizes differ by at most one."""
    parts = max(1, min(parts, n))
    bounds = [round(i * n / parts) for i in range(parts + 1)]
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def mean_mix_state(model, skill: Skill, k: int, mix_sets: int) -> SkillState:
    """Equal-weight mix of the states of disjoint parts of the first k demonstrations."""
    demos = skill.demonstrations[:k]
    states = [capture_demos(model, skill, demos[r.start:r.stop]) for r in split_sets(k, mix_sets)]
    return mix(states, [1.0] * len(states))


def decay_state(model, chunk_ids: list[list[int]]) -> SkillState:
    """Per-chunk states composed in order with the recurrence's decay (skillsoup.states.decay)."""
    return mix_decay(capture_chunks(model, chunk_ids))


def router_picker(registry, model, kind: str = "text", conv: str = "mix") -> Picker:
    """The runtime's choice for a query (``SkillSoup.route`` then ``SkillSoup.state_for``): route from
    its text alone, mix the matches' stored states with the router's weights, render with the top
    match's template; no match = neutral state, default template."""
    from skillsoup.runtime import SkillSoup

    soup = SkillSoup(registry, model)

    def pick(query: str):
        matches = soup.route(query, router=kind)
        state, template = soup.state_for(matches, conv)
        return state, template, matches[0].name if matches else None

    return pick


# ---- scoring ------------------------------------------------------------------------------------
def _score(method: str, k: int, skill: Skill, results, **extra) -> tuple[MethodScore, list[str]]:
    answers = [r.answer for r in results]
    correct = [a == t.output.strip() for a, t in zip(answers, skill.tests)]
    tokens = sum(r.n_target for r in results)
    nll = sum(r.nll * r.n_target for r in results) / tokens  # pooled: per expected-output token
    return MethodScore(method, k, sum(correct) / len(correct), nll, len(results), **extra), answers


def evaluate_skill(model, skill: Skill, ks: Sequence[int], methods: Sequence[str], *, tests_from: str = "tests",
                   mix_sets: int = 2, picker: Picker | None = None, max_new_tokens: int = 64) -> SkillReport:
    """Scores of one skill (its ``tests`` are the held-out pairs) for each method and k."""
    tests = skill.tests
    report = SkillReport(skill.name, len(skill.demonstrations), len(tests), tests_from, list(ks))
    got: dict[tuple[str, int], tuple[MethodScore, list[str]]] = {}

    def run(method: str, k: int, cases: list[Case], **extra) -> None:
        got[(method, k)] = _score(method, k, skill, score_cases(model, cases, max_new_tokens), **extra)

    def from_state(state: SkillState | None, demos_k: int = 0) -> list[Case]:
        return [make_case(model, skill, t.input, t.output, demos_k, state) for t in tests]

    if "zero-shot" in methods:
        run("zero-shot", 0, from_state(None))
    for k in (k for k in ks if k > 0):
        one_pass = capture_demos(model, skill, skill.demonstrations[:k]) if {"state", "decay-mix"} & set(methods) else None
        if "prompt" in methods:
            run("prompt", k, from_state(None, k))
        if "state" in methods:
            run("state", k, from_state(one_pass))
        if "mean-mix" in methods:
            run("mean-mix", k, from_state(mean_mix_state(model, skill, k, mix_sets)))
        if "decay-mix" in methods:
            chunks = [model.encode(skill.render_demonstration(d)) for d in skill.demonstrations[:k]]
            state = decay_state(model, chunks)
            joined = [t for c in chunks for t in c]  # the same tokens read in one pass (BPE may split differently)
            reference = one_pass if joined == model.encode(skill.render_demonstrations(k)) else model.capture(joined)
            run("decay-mix", k, from_state(state), state_error=relative_state_error(state, reference))
    if "router" in methods and picker is not None:
        cases, tops = [], []
        for t in tests:
            state, template, top = picker(t.input)
            cases.append(Case(model.encode(template.render_query(t.input)),
                              model.encode(target_text(template, t.input, t.output)), template.stop_strings(), state))
            tops.append(top)
        run("router", len(skill.demonstrations), cases,
            routed_to_skill=sum(top == skill.name for top in tops) / len(tops))
    for (method, k), (score, answers) in got.items():
        base = got.get(("prompt", k))
        if method in K_METHODS and method != "prompt" and base is not None:
            score.agree_with_prompt = sum(a == b for a, b in zip(answers, base[1])) / len(answers)
            score.nll_gap = score.nll - base[0].nll
        report.scores.append(score)
    shown = max(got, key=lambda key: (key[0] == "state", key[1]), default=None)
    if shown is not None:
        report.examples = [{"method": f"{shown[0]} k={shown[1]}", "input": t.input, "expected": t.output, "answer": a}
                           for t, a in zip(tests, got[shown][1]) if a != t.output.strip()][:3]
    return report


def check_inputs(skills: Sequence[Skill], ks: Sequence[int] | None, methods: Sequence[str], *, n_tests=None,
                 split=None, seed: int = 0, mix_sets: int = 2) -> tuple[list[tuple[Skill, str]], list[list[int]]]:
    """Every input check of :func:`evaluate`, without a model: call it before loading one.
    -> (prepared skills, each one's k values)."""
    if unknown := sorted(set(methods) - set(METHODS)):
        raise ICLEvalError(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if mix_sets < 1:
        raise ICLEvalError(f"--mix-sets {mix_sets}: give 1 or more")
    prepared = prepare_skills(skills, n_tests, split, seed)
    return prepared, [skill_ks(s, DEFAULT_KS if ks is None else ks, cap=ks is None) for s, _ in prepared]


def evaluate(model, skills: Sequence[Skill], ks: Sequence[int] | None = None, methods: Sequence[str] | None = None, *,
             n_tests: int | None = None, split: float | None = None, seed: int = 0, mix_sets: int = 2,
             picker: Picker | None = None, max_new_tokens: int = 64,
             progress: Callable[[SkillReport], None] | None = None) -> ICLReport:
    """Evaluate every skill. ``ks=None`` uses DEFAULT_KS capped at each skill's demonstrations; given
    ks must fit every skill. The router method without a ``picker`` is
    skipped with a note in the report."""
    methods = list(METHODS) if methods is None else list(methods)
    prepared, per_skill = check_inputs(skills, ks, methods, n_tests=n_tests, split=split, seed=seed, mix_sets=mix_sets)
    notes = []
    layout = getattr(model, "layout", None)
    if "decay-mix" in methods and layout is not None and layout.n_recurrent != layout.num_layers:
        methods.remove("decay-mix")  # attention KV does not decay: the composition has no meaning there
        notes.append(f"decay-mix skipped: it composes recurrent-only models, this {model.arch} model has "
                     f"{layout.describe()}")
    if "router" in methods and picker is None:
        notes.append("router skipped: no registry given (pass --registry with the skills added)")
    for note in notes:
        log.info(note)
    t0 = time.perf_counter()
    reports = []
    for (skill, source), skill_k in zip(prepared, per_skill):
        reports.append(evaluate_skill(model, skill, skill_k, methods, tests_from=source, mix_sets=mix_sets,
                                      picker=picker, max_new_tokens=max_new_tokens))
        if progress is not None:
            progress(reports[-1])
    all_ks = sorted({k for r in reports for k in r.ks})
    settings = {"n_tests": n_tests, "split": split, "seed": seed, "mix_sets": mix_sets, "max_new_tokens": max_new_tokens}
    return ICLReport(getattr(model, "source", ""), methods, all_ks, reports, notes, settings, time.perf_counter() - t0)
