"""SkillRegistry: skills (the source of truth) in a Chroma index, their states (a cache per model)
in a StateStore.

Order of writes, so that a skill is visible only when complete (a kill -9 at any point leaves every
earlier skill intact and at most leftovers that readers ignore and ``doctor`` removes):
    1. the state file (atomic rename)
    2. the demonstration rows (ids carry the skill's content hash)
    3. the skill row: its presence is the commit mark
    4. only for a replace: the old version's demonstration rows and state files
``add`` takes skills in chunks of 32 and does each step for the whole chunk (one Chroma call per step
instead of one per skill); the order above holds for every skill of the chunk.
A composite skill (``skillsoup compose``) is a row whose state is a mix of other skills' states, made
and remixed by :mod:`skillsoup.registry.composite`. Readers list only skills with a skill row and ignore demonstration rows whose content hash differs
from the skill row's. Writers hold the registry lock (embedded Chroma is not process-safe).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from skillsoup.errors import RegistryError, SkillConflictError, SkillNotFoundError, StateError, StateFileError
from skillsoup.registry.composite import (
    Recipe,
    add_composite,
    add_file_composite,
    broken_parts,
    dependents,
    mix_recipe,
    plan_file_composites,
    recipe_dict,
    recipe_of,
    remix_blockers,
)
from skillsoup.registry.index import DEMOS, SKILLS, SkillIndex, SkillRow, skill_text
from skillsoup.registry.lock import NoLock, RegistryLock
from skillsoup.registry.opening import open_index, read_only_error, remove_snapshot
from skillsoup.registry.settings import Settings
from skillsoup.registry.store import StateStore, fp_key
from skillsoup.registry.values import (AddResult, DemoMatch, ProgressFn, SkillHit, SkillInfo, add_status, capture_skill,
                                       plain_and_composites)
from skillsoup.skills.skill import Skill
from skillsoup.states.state import SkillState

if TYPE_CHECKING:
    from skillsoup.models.base import StateModel
    from skillsoup.registry.doctor import DoctorReport

log = logging.getLogger(__name__)

_CHUNK = 32  # skills embedded, captured and committed together


class SkillRegistry:
    def __init__(self, path: Path, index: SkillIndex, embedder, chroma_url: str | None = None, lock_timeout: float | None = None,
                 read_only: bool = False, snapshot: Path | None = None):
        self.path = Path(path)
        self.chroma_url = chroma_url
        self.index = index
        self.embedder = embedder
        self.store = StateStore(self.path / "states")
        self._settings = Settings(self.path)
        self.read_only = read_only  # reads work; writes raise RegistryReadOnlyError (registry/opening.py)
        self._snapshot = snapshot
        # > 0: get_many, `in` and the routing commit check may answer from rows read that long ago (registry/recent.py)
        self.rows_max_age = 0.0
        # a Chroma server serialises index writes itself; the file lock guards the embedded index; a
        # read-only registry's index is its own private copy
        self.lock = NoLock() if chroma_url or read_only else RegistryLock(self.path, lock_timeout)
        self._settings_lock = RegistryLock(self.path, lock_timeout) if chroma_url else self.lock

    # ---- opening ---------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | os.PathLike | None = None, chroma_url: str | None = None, embedder=None,
             lock_timeout: float | None = None, read_only: bool | None = None) -> SkillRegistry:
        """Open (lazily create) the registry at ``path`` (default: config's registry folder).

        ``embedder``: an object with ``embed(texts)``, ``name`` and ``dim``, or a name for
        :func:`skillsoup.embedding.get_embedder`; by default the one the registry was built with.
        ``read_only``: True to only read (writes raise RegistryReadOnlyError); None (default) when
        this process may not write the folder (see :mod:`skillsoup.registry.opening`)."""
        from skillsoup import config

        path = Path(path).expanduser() if path is not None else config.default_registry_dir()
        if path.exists() and not path.is_dir():
            raise RegistryError(f"registry path {path} is a file; pass a folder with --registry")
        opened = open_index(path, chroma_url, embedder, lock_timeout, read_only)
        log.info("opened registry %s (%s, embedder %s%s)", path, chroma_url or "embedded Chroma", opened.embedder.name,
                 ", read-only" if opened.read_only else "")
        return cls(path, opened.index, opened.embedder, chroma_url=chroma_url, lock_timeout=lock_timeout,
                   read_only=opened.read_only, snapshot=opened.snapshot)

    def close(self) -> None:
        self.lock.release()
        self.index.close()
        remove_snapshot(self._snapshot)
        self._snapshot = None

    def check_writable(self, action: str) -> None:
        """Refuse (RegistryReadOnlyError) to ``action`` on a read-only registry, before any work."""
        if self.read_only:
            raise read_only_error(self.path, action)

    def __enter__(self) -> SkillRegistry:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SkillRegistry({str(self.path)!r}, chroma_url={self.chroma_url!r}, embedder={self.embedder.name!r})"

    # ---- reading ---------------------------------------------------------------------------
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.embedder.embed(list(texts))

    def names(self) -> list[str]:
        return sorted(self.index.skill_metadata())

    def list(self) -> list[SkillInfo]:
        return [_info(row) for _, row in sorted(self.index.get_skills().items())]

    def _row(self, name: str) -> SkillRow:
        row = self.index.get_skills([name]).get(name)
        if row is None:
            raise SkillNotFoundError(f"no skill named {name!r} in registry {self.path}; see skillsoup skills list", (name,))
        return row

    def get(self, name: str) -> Skill:
        return self._row(name).skill

    def get_many(self, names: Sequence[str]) -> list[Skill]:
        """The skills ``names``, in order, read in one index call (not one per skill)."""
        rows = self.index.recent_skills(names, self.rows_max_age)
        return [rows[n].skill if n in rows else self._row(n).skill for n in names]  # _row: SkillNotFoundError

    def info(self, name: str) -> SkillInfo:
        return _info(self._row(name))

    def __contains__(self, name: str) -> bool:
        if self.rows_max_age > 0:
            return bool(self.index.recent_skills([name], self.rows_max_age))
        return bool(self.index.skill_metadata([name]))

    def query_skills(self, embedding: np.ndarray, n: int) -> list[SkillHit]:
        """The ``n`` nearest skill rows (a row is its skill's commit mark), best first."""
        return [SkillHit(rid, sim) for rid, sim in zip(*self.index.nearest(SKILLS, embedding, n))]

    def query_demonstrations(self, embedding: np.ndarray, n: int) -> list[DemoMatch]:
        """The ``n`` nearest demonstrations of committed skills (leftover rows are skipped)."""
        return [DemoMatch(*hit) for hit in self.index.nearest_demonstrations(embedding, n, self.rows_max_age)]

    # ---- states ----------------------------------------------------------------------------
    def state(self, name: str, model: StateModel, recompute: bool = True) -> SkillState:
        """The skill's state for ``model``. A missing, corrupted or foreign state is never used:
        it is recomputed from the demonstrations (with a warning), or with ``recompute=False``
        a StateError says so."""
        row = self._row(name)
        problem = self._load_problem(row, model)
        if not isinstance(problem, str):
            return problem
        if not recompute:
            raise StateFileError(f"skill {name!r}: {problem}; run skillsoup skills rebuild")
        log.warning("skill %r: %s; recomputing it from its %d demonstrations", name, problem, row.n_demos)
        if self.read_only:  # nowhere to keep it: computed for this use only
            return self._compute(row, model)
        with self.lock:
            row = self._row(name)  # it may have changed while we waited for the lock
            return self.recompute(row, model)

    def _load_problem(self, row: SkillRow, model: StateModel) -> SkillState | str:
        record = row.states.get(fp_key(model.fingerprint))
        if record is None or record[0] != model.fingerprint:
            return f"no state recorded for model {model.fingerprint[:12]}"
        try:
            return self.store.load(row.state_hash, model.fingerprint, record[1], model)
        except StateError as exc:
            return exc.problem  # the advice to recompute is for callers that do not

    def _compute(self, row: SkillRow, model: StateModel) -> SkillState:
        """Capture a skill's demonstrations, or re-mix a composite's sources (registry/composite.py)."""
        recipe = recipe_of(row)
        return capture_skill(model, row.skill) if recipe is None else mix_recipe(self, row.name, recipe, model)

    def recompute(self, row: SkillRow, model: StateModel) -> SkillState:
        """:meth:`_compute`, then store the state and record it in the index."""
        self.check_writable("store a recomputed state")
        state = self._compute(row, model)
        sha = self.store.put(state, row.state_hash)
        self.index.set_state(row.name, model.fingerprint, sha)
        self.index.share_state(row.state_hash, model.fingerprint, sha)
        return state

    # ---- writing ---------------------------------------------------------------------------
    def add(self, skills: Iterable[Skill], model: StateModel, replace: bool = False,
            progress: ProgressFn | None = None) -> list[AddResult]:
        """Add skills with their states for ``model``. An unchanged skill is a no-op (its state is
        computed if this model has none); a changed one with an existing name needs ``replace``. A
        skill with a recipe (an exported composite) is mixed from its sources, after the plain skills.
        Every conflict and missing source is reported before anything is written."""
        skills, composites = plain_and_composites(skills)
        self.check_writable("add skills")
        with self.lock:
            self.index.collection(SKILLS), self.index.collection(DEMOS)
            current = self.index.skill_metadata()
            plan = [(s, add_status(s, current.get(s.name))) for s in skills]
            conflicts = [s.name for s, status in plan if status == "conflict" and not replace]
            if conflicts:
                raise SkillConflictError(
                    f"skill{'s' if len(conflicts) > 1 else ''} {', '.join(map(repr, conflicts))} already in the registry "
                    "with different content; add with --replace to overwrite, or rename", tuple(conflicts))
            mixes = plan_file_composites(self, composites, skills, current, replace)
            plan = [(s, "replaced" if status == "conflict" else status) for s, status in plan]
            state_refs = Counter(m.get("state_hash") for m in current.values())
            results: list[AddResult] = []
            done = [0]

            def captured(name: str) -> None:
                done[0] += 1
                if progress is not None:
                    progress(done[0], len(plan), name)

            for start in range(0, len(plan), _CHUNK):
                results += self._add_chunk(plan[start : start + _CHUNK], model, current, state_refs, captured)
            return results + [add_file_composite(self, *mixed, model) for mixed in mixes]

    def _add_chunk(self, chunk, model: StateModel, current: dict, state_refs: Counter,
                   captured: Callable[[str], None]) -> list[AddResult]:
        """Steps 1-4 of the module docstring for a chunk of skills, each step batched over the chunk
        (a Chroma call costs ~20 ms whatever its size). ``state_refs`` counts skills per state hash."""
        t_chunk = time.perf_counter()
        fresh = [s for s, status in chunk if status != "unchanged"]
        vectors = self.embed_skills(fresh)
        seconds: dict[str, float] = {}
        shas: dict[str, str] = {}  # skill name -> sha256 of its state file
        written: dict[str, str] = {}  # state hash -> sha256, files written in this chunk
        for skill, status in chunk:
            t0 = time.perf_counter()
            if status == "unchanged":
                self._ensure_state(skill, current[skill.name], model)
            elif skill.state_hash in written:  # same template and demonstrations as one just written
                shas[skill.name] = written[skill.state_hash]
            else:
                state = capture_skill(model, skill)
                shas[skill.name] = written[skill.state_hash] = self.store.put(state, skill.state_hash)  # 1. states
                if state_refs[skill.state_hash] > 0:
                    self.index.share_state(skill.state_hash, model.fingerprint, shas[skill.name])
            seconds[skill.name] = time.perf_counter() - t0
            captured(skill.name)
        self.index.put_demos_many([(s, vectors[s.name][1]) for s in fresh])  # 2. demonstration rows
        fp16 = fp_key(model.fingerprint)
        rows = []
        for s in fresh:
            old = current.get(s.name)
            keep_old = old is not None and old.get("state_hash") == s.state_hash
            drop = [] if old is None or keep_old else [k[3:] for k in old if k.startswith("fp_") and k[3:] != fp16]
            rows.append((s, vectors[s.name][0], {fp16: (model.fingerprint, shas[s.name])}, drop))
        self.index.put_skills(rows)  # 3. the commit marks
        for s in fresh:  # 4. leftovers of replaced versions
            state_refs[s.state_hash] += 1
            old = current.get(s.name)
            if old is not None:
                state_refs[old.get("state_hash")] -= 1
                self.index.delete_stale_demos(s.name, s.content_hash)
                if old.get("state_hash") != s.state_hash:
                    self.drop_state_files(old, in_use=state_refs[old.get("state_hash")] > 0)
        # the batched work (embedding, index rows) is shared out evenly
        shared = max(0.0, time.perf_counter() - t_chunk - sum(seconds.values())) / len(chunk)
        return [AddResult(s.name, status, len(s.demonstrations), seconds[s.name] + shared) for s, status in chunk]

    def embed_skills(self, skills: list[Skill]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """name -> (skill-row vector [dim], demonstration vectors [n, dim]), embedded in one batch."""
        texts: list[str] = []
        for s in skills:
            texts.append(skill_text(s))
            texts.extend(d.input for d in s.demonstrations)
        vectors = self.embed_texts(texts) if texts else np.zeros((0, 1), np.float32)
        out, at = {}, 0
        for s in skills:
            n = len(s.demonstrations)
            out[s.name] = (vectors[at], vectors[at + 1 : at + 1 + n])
            at += 1 + n
        return out

    def drop_state_files(self, meta: dict, in_use: bool) -> None:
        """Delete the state files recorded in a skill row's metadata unless another skill uses them."""
        state_hash = meta.get("state_hash")
        if not state_hash or in_use:
            return
        for key, fingerprint in meta.items():
            if key.startswith("fp_") and isinstance(fingerprint, str):
                self.store.delete(state_hash, fingerprint)

    def _ensure_state(self, skill: Skill, meta: dict, model: StateModel) -> None:
        """An unchanged skill needs nothing unless this model has no state file for it yet."""
        fp16 = fp_key(model.fingerprint)
        if meta.get(f"fp_{fp16}") == model.fingerprint and self.store.exists(skill.state_hash, model.fingerprint):
            return
        row = self._row(skill.name)
        self.recompute(row, model)

    def add_composite(self, skill: Skill, recipe: Recipe, model: StateModel, replace: bool = False) -> AddResult:
        """Save a composite skill: ``skill`` routes like any other, its state is ``recipe``'s mix of
        its sources' states for ``model`` (see :mod:`skillsoup.registry.composite`)."""
        self.check_writable("add a composite skill")
        with self.lock:
            self.index.collection(SKILLS), self.index.collection(DEMOS)
            return add_composite(self, skill, recipe, model, replace)

    def recipe(self, name: str) -> tuple[Recipe, list[str]] | None:
        """A composite's recipe and its sources that were removed or changed since (None: a plain skill)."""
        recipe = recipe_of(self._row(name))
        return None if recipe is None else (recipe, broken_parts(self, recipe))

    def remove(self, name: str) -> list[str]:
        """Delete a skill: its row first (so it disappears at once), then its leftovers. Returns the
        composites that used it (they keep their stored mix but can no longer be remixed)."""
        self.check_writable(f"remove skill {name!r}")
        with self.lock:
            row = self._row(name)
            self.index.delete_skill(name)
            self.index.delete_stale_demos(name, None)
            others = {m.get("state_hash") for m in self.index.skill_metadata().values()}
            self.drop_state_files(row.metadata, in_use=row.state_hash in others)
            users = dependents(self, name)
        if users:
            log.info("removed %r, a source of composite skills %s", name, ", ".join(users))
        return users

    def rebuild(self, model: StateModel, names: Sequence[str] | None = None,
                progress: ProgressFn | None = None) -> list[AddResult]:
        """Recompute the states of ``names`` (default all) for ``model`` from their demonstrations."""
        self.check_writable("rebuild states")
        with self.lock:
            rows = self.index.get_skills()
            if names is not None:
                missing = sorted(set(names) - set(rows))
                if missing:
                    raise SkillNotFoundError(f"no skill named {', '.join(map(repr, missing))} in registry {self.path}",
                                         tuple(missing))
                rows = {n: rows[n] for n in names}
            results = []
            # composites last, so they mix their sources' fresh states
            for i, (name, row) in enumerate(sorted(rows.items(), key=lambda kv: (kv[1].is_composite, kv[0]))):
                t0 = time.perf_counter()
                blockers = remix_blockers(self, row)
                if blockers:  # a composite keeps its stored mix; say why it was not remixed
                    results.append(AddResult(name, f"kept: {', '.join(blockers)}", row.n_demos, 0.0))
                else:
                    self.recompute(row, model)
                    results.append(AddResult(name, "rebuilt", row.n_demos, time.perf_counter() - t0))
                if progress is not None:
                    progress(i + 1, len(rows), name)
            return results

    def doctor(self, model: StateModel | None = None, repair: bool = True) -> DoctorReport:
        """Check index against state files (and, given ``model``, that every skill has a state
        for it); with ``repair``, fix what was found. See :mod:`skillsoup.registry.doctor`."""
        from skillsoup.registry.doctor import run_doctor

        if not repair:
            return run_doctor(self, model, repair=False)
        self.check_writable("be repaired (check it with repair=False, skillsoup doctor --no-repair)")
        with self.lock:
            return run_doctor(self, model, repair=True)

    # ---- settings --------------------------------------------------------------------------
    def get_setting(self, key: str, default=None):
        return self._settings.read()[1].get(key, default)

    def settings(self) -> tuple[int, dict]:
        """(version, all values); the version grows with every write."""
        return self._settings.read()

    def set_setting(self, key: str, value) -> int:
        """Store a JSON-able value (None removes the key); returns the new settings version."""
        self.check_writable(f"store setting {key!r}")
        with self._settings_lock:
            return self._settings.write(key, value)

    # ---- sizes -----------------------------------------------------------------------------
    def disk_usage(self) -> dict[str, int]:
        """Bytes on disk: {"chroma": ..., "states": ...} (chroma is 0 with a server)."""
        chroma = self.path / "chroma"
        size = sum(p.stat().st_size for p in chroma.rglob("*") if p.is_file()) if chroma.is_dir() else 0
        return {"chroma": size, "states": self.store.nbytes()}


def _info(row: SkillRow) -> SkillInfo:
    s = row.skill
    return SkillInfo(name=row.name, description=s.description, n_demos=len(s.demonstrations), tags=s.tags,
                     content_hash=row.content_hash, state_hash=row.state_hash,
                     models=tuple(sorted(fp for fp, _ in row.states.values())), source=s.source, recipe=recipe_dict(row))
