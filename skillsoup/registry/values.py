"""The values the registry hands out, and the one definition of a skill's state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from skillsoup.skill import Skill
from skillsoup.state import SkillState

if TYPE_CHECKING:
    from skillsoup.models.base import StateModel

ProgressFn = Callable[[int, int, str], None]  # (skills done, total, name of the skill just done)


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


class SkillMatch(NamedTuple):
    skill: str
    similarity: float


def skill_token_ids(model: StateModel, skill: Skill) -> list[int]:
    """The tokens whose state is the skill's state: BOS (when the tokenizer has one, like
    ``model.neutral_state()``) then the rendered demonstrations."""
    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
    return ([bos] if bos is not None else []) + model.encode(skill.render_demonstrations())


def capture_skill(model: StateModel, skill: Skill) -> SkillState:
    state = model.capture(skill_token_ids(model, skill))
    state.meta.update(skill=skill.name, state_hash=skill.state_hash)
    return state
