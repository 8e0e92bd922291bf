"""skillsoup: route agent skills by retrieving and mixing recurrent-model states (State Soup).

The public API, importable from here (heavy parts load on first use):
    load_model, StateModel        a checkpoint with explicit, injectable state   (skillsoup.models)
    SkillState, mix, mix_ref      states as values, and their mixing              (skillsoup.states)
    Skill, load_skills            skill files                                      (skillsoup.skills)
    SkillRegistry                 Chroma index + state store                       (skillsoup.registry)
    Router, SkillMatch            query -> skills with weights                     (skillsoup.routing)
    SkillSoup, Answer             route -> mix -> answer                           (skillsoup.runtime)
"""

import importlib
import logging

from skillsoup.errors import SkillsoupError

__version__ = "0.1.0"
logging.getLogger(__name__).addHandler(logging.NullHandler())

_LAZY = {
    "StateModel": "skillsoup.models", "load_model": "skillsoup.models",
    "SkillState": "skillsoup.states", "mix": "skillsoup.states", "mix_ref": "skillsoup.states",
    "Skill": "skillsoup.skills", "Demonstration": "skillsoup.skills", "load_skills": "skillsoup.skills",
    "SkillRegistry": "skillsoup.registry",
    "Router": "skillsoup.routing", "SkillMatch": "skillsoup.routing",
    "SkillSoup": "skillsoup.runtime", "Answer": "skillsoup.runtime",
}


def __getattr__(name: str):
    """Import the public names on first use, so ``import skillsoup`` stays cheap (no torch or Chroma)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'skillsoup' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["SkillsoupError", "__version__", *_LAZY]
