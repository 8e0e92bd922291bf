"""The values the registry hands out, and the one definition of a skill's state."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

from skillsoup.errors import RegistryError
from skillsoup.skills.skill import Skill
from skillsoup.states.state import SkillState

if TYPE_CHECKING:
    import numpy as np

    from skillsoup.models.base import StateModel
    from skillsoup.registry.index import SkillIndex, SkillRow
    from skillsoup.registry.store import StateStore

ProgressFn = Callable[[int, int, str], None]  # (skills done, total, name of the skill just done)


def add_status(skill: Skill, meta: dict | None) -> str:
    """What adding ``skill`` does given the metadata of the registry's skill of that name (None:
    there is none): "added", "unchanged", or "conflict" (needs replace)."""
    if meta is None:
        return "added"
    if meta.get("recipe") is not None:  # a composite is replaced by a plain skill only on request
        return "conflict"
    return "unchanged" if meta.get("content_hash") == skill.content_hash else "conflict"


def plain_and_composites(skills: Iterable[Skill]) -> tuple[list[Skill], list[Skill]]:
    """The skills of one ``add`` call split into plain ones and composites (a recipe: an exported
    composite), each name given once (RegistryError otherwise)."""
    skills, seen = list(skills), set()
    for s in skills:
        if s.name in seen:
            raise RegistryError(f"skill {s.name!r} is given twice; rename one of them")
        seen.add(s.name)
    return [s for s in skills if s.recipe is None], [s for s in skills if s.recipe is not None]


@dataclass(frozen=True)
class AddResult:
    name: str
    status: str  # "added" | "unchanged" | "replaced" | "rebuilt"
    n_demos: int
    seconds: float


@dataclass(frozen=True)
class SkillInfo:
    name: str
    description: str
    n_demos: int
    tags: tuple[str, ...]
    content_hash: str
    state_hash: str
    models: tuple[str, ...]  # fingerprints with a recorded state
    source: str
    recipe: dict | None = None  # a composite's recipe (registry/composite.py); None for a plain skill


class DemoMatch(NamedTuple):
    skill: str
    similarity: float  # cosine
    index: int  # position of the demonstration in the skill


class SkillHit(NamedTuple):
    skill: str
    similarity: float  # cosine of the query and the skill row


class RegistryCore(Protocol):
    """What composites and the doctor work on: a SkillRegistry's parts. They take this, not the
    class, so neither imports registry.py (which imports them)."""

    path: Path
    index: SkillIndex
    store: StateStore

    def __contains__(self, name: str) -> bool: ...
    def check_writable(self, action: str) -> None: ...
    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...
    def embed_skills(self, skills: list[Skill]) -> dict[str, tuple[np.ndarray, np.ndarray]]: ...
    def drop_state_files(self, meta: dict, in_use: bool) -> None: ...
    def recompute(self, row: SkillRow, model: StateModel) -> SkillState: ...
    def state(self, name: str, model: StateModel, recompute: bool = True) -> SkillState: ...


def skill_token_ids(model: StateModel, skill: Skill) -> list[int]:
    """The tokens whose state is the skill's state: BOS (when the tokenizer has one, like
    ``model.neutral_state()``) then the rendered demonstrations."""
    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
    return ([bos] if bos is not None else []) + model.encode(skill.render_demonstrations())


def capture_skill(model: StateModel, skill: Skill) -> SkillState:
    state = model.capture(skill_token_ids(model, skill))
    state.meta.update(skill=skill.name, state_hash=skill.state_hash)
    return state
