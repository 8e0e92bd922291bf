"""doctor: check the index against the state files, and repair.

What it finds (each a :class:`Problem`):
    orphan demo row        a demonstration row of no committed skill, or of a replaced version
    incomplete demos       a committed skill whose demonstration rows are not all there
    orphan state file      a state file no skill row records (an interrupted add, a removed skill)
    stray file             a temp file of an interrupted write, or a file that is not a state
    missing state file     a skill row records a state whose file is gone
    sha256 mismatch        a state file's bytes differ from what the index recorded
    unreadable state       the bytes match but the file fails SkillState's checks
    no state for model     (given a model) a skill has no state for it
    unreadable recipe      a composite skill's recipe cannot be decoded
    interrupted encoder switch
                           the index was being re-embedded with another text encoder (registry/encoders.py)
    composite source removed / composite source changed
                           a source of a composite skill is gone, or differs from when it was composed
Repairs finish an encoder switch, delete leftovers, re-embed missing demonstration rows, and recompute bad or missing states for
the given model (a composite's by re-mixing its sources); bad states of other models are forgotten
(they are recomputed when next needed). Composite problems cannot be repaired here (``fixable`` is
False): the stored mix keeps working, and ``skillsoup compose NAME --replace`` makes a new one.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from skillsoup.errors import StateError
from skillsoup.registry import encoders
from skillsoup.registry.store import file_sha256, fp_key
from skillsoup.states.state import SkillState

if TYPE_CHECKING:
    from skillsoup.models.base import StateModel
    from skillsoup.registry.values import RegistryCore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    kind: str
    subject: str  # a row id, a file path or a skill name
    detail: str = ""
    fixable: bool = True  # repair can fix it


@dataclass
class DoctorReport:
    skills: int
    demo_rows: int
    state_files: int
    problems: list[Problem] = field(default_factory=list)
    repaired: bool = False  # the problems listed were fixed
    model: str | None = None  # fingerprint checked for missing states

    @property
    def clean(self) -> bool:
        return not self.problems

    @property
    def unfixable(self) -> list[Problem]:
        """Problems that repair leaves as they are (they need the user)."""
        return [p for p in self.problems if not p.fixable]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for p in self.problems:
            out[p.kind] += 1
        return dict(out)


def run_doctor(reg: RegistryCore, model: StateModel | None, repair: bool) -> DoctorReport:
    """The caller holds the registry lock when ``repair`` is set."""
    rows = reg.index.get_skills()
    problems: list[Problem] = []
    fixes: list = []  # callables, run only when repairing

    # an interrupted switch of the text encoder, and candidates of an interrupted tuning
    target = encoders.pending(reg)
    if target:
        problems.append(Problem("interrupted encoder switch", target, f"index partly re-embedded from {reg.index.embedder_name}"))
        fixes.append(lambda: encoders.switch(reg, target))  # first: later fixes embed with the new encoder
    for folder in sorted((reg.path / encoders.ENCODERS).glob(".staging-*")):
        problems.append(Problem("stray file", str(folder), "a candidate encoder of an interrupted tuning"))
        fixes.append(lambda folder=folder: _remove(folder))

    # demonstration rows vs skill rows
    seen: dict[str, set[int]] = defaultdict(set)
    orphan_ids, n_demo_rows = [], 0
    for rid, meta in reg.index.demo_rows():
        n_demo_rows += 1
        row = rows.get(meta.get("skill"))
        if row is None or row.content_hash != meta.get("content_hash"):
            orphan_ids.append(rid)
            problems.append(Problem("orphan demo row", rid))
        else:
            seen[row.name].add(int(meta.get("index", -1)))
    if orphan_ids:
        fixes.append(lambda: reg.index.delete_demos(orphan_ids))
    for name, row in sorted(rows.items()):
        if seen[name] != set(range(row.n_demos)):
            problems.append(Problem("incomplete demos", name, f"{len(seen[name])} of {row.n_demos} rows"))
            fixes.append(lambda row=row: _reindex_demos(reg, row))

    # state files vs skill rows
    recorded = {(fp16, row.state_hash) for row in rows.values() for fp16 in row.states}
    files = list(reg.store.files())
    for f in files:
        if (f.fp16, f.state_hash) not in recorded:
            problems.append(Problem("orphan state file", str(f.path)))
            fixes.append(lambda f=f: f.path.unlink(missing_ok=True))
    for path in reg.store.stray_files():
        problems.append(Problem("stray file", str(path)))
        fixes.append(lambda path=path: _remove(path))

    # every recorded state: present, same bytes, readable, made by its model
    for name, row in sorted(rows.items()):
        stuck = _composite_problems(row, rows, problems)  # a composite that cannot be remixed
        for fp16, (fingerprint, sha) in sorted(row.states.items()):
            kind, detail = _check_state(reg, row.state_hash, fingerprint, sha, model)
            if kind is None:
                continue
            problems.append(Problem(kind, name, f"model {fp16}: {detail}" if detail else f"model {fp16}"))
            if model is not None and fingerprint == model.fingerprint and not stuck:
                fixes.append(lambda row=row: reg.recompute(row, model))
            else:
                fixes.append(lambda row=row, fp=fingerprint: _forget(reg, row.name, row.state_hash, fp))
        if model is not None and fp_key(model.fingerprint) not in row.states:
            problems.append(Problem("no state for model", name, f"model {fp_key(model.fingerprint)}", fixable=not stuck))
            if not stuck:
                fixes.append(lambda row=row: reg.recompute(row, model))

    report = DoctorReport(
        skills=len(rows), demo_rows=n_demo_rows, state_files=len(files), problems=problems,
        model=model.fingerprint if model is not None else None,
    )
    if repair and problems:
        for fix in fixes:
            fix()
        report.repaired = True
        if fixes:
            log.warning("doctor repaired %d problems in %s: %s", len(problems) - len(report.unfixable), reg.path,
                        report.counts())
    return report


def _composite_problems(row, rows: dict, problems: list[Problem]) -> bool:
    """Add the problems of a composite's recipe and sources; True when it cannot be remixed."""
    from skillsoup.errors import RegistryError
    from skillsoup.registry.composite import OK, part_status, recipe_of

    try:
        recipe = recipe_of(row)
    except RegistryError as exc:
        problems.append(Problem("unreadable recipe", row.name, str(exc), fixable=False))
        return True
    if recipe is None:
        return False
    broken = [(p, status) for p, status in part_status(recipe, rows) if status != OK]
    for part, status in broken:
        problems.append(Problem(f"composite source {status}", row.name, part.name, fixable=False))
    return bool(broken)


def _check_state(reg: RegistryCore, state_hash: str, fingerprint: str, sha: str, model) -> tuple[str | None, str]:
    path = reg.store.path(state_hash, fingerprint)
    if not path.is_file():
        return "missing state file", str(path)
    try:
        digest = file_sha256(path)
    except OSError as exc:  # e.g. a file another user wrote with no read permission for us
        return "unreadable state", f"{path}: {exc.strerror or exc}"
    if digest != sha:
        return "sha256 mismatch", str(path)
    check_with = model if model is not None and model.fingerprint == fingerprint else None
    try:
        state = SkillState.load(path, model=check_with)
    except StateError as exc:
        return "unreadable state", str(exc)
    if state.fingerprint != fingerprint:
        return "unreadable state", f"{path} was made by model {state.fingerprint[:12]}"
    return None, ""


def _forget(reg: RegistryCore, name: str, state_hash: str, fingerprint: str) -> None:
    reg.store.delete(state_hash, fingerprint)
    reg.index.set_state(name, fingerprint, None)


def _reindex_demos(reg: RegistryCore, row) -> None:
    vectors = reg.embed_texts([d.input for d in row.skill.demonstrations])
    reg.index.put_demos(row.skill, vectors)


def _remove(path) -> None:
    if path.is_dir():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
