"""The skill registry: a Chroma index of skills and demonstrations plus a store of state files.

    SkillRegistry  add / list / get / remove / state / rebuild / doctor / query / settings
    SkillIndex     the Chroma collections (never embeds text itself)
    StateStore     safetensors state files per (state hash, model fingerprint), sha256-checked
    RegistryLock   one writer at a time on an embedded registry
"""

from skillsoup.registry.doctor import DoctorReport, Problem
from skillsoup.registry.index import SkillIndex
from skillsoup.registry.lock import RegistryLock
from skillsoup.registry.registry import SkillRegistry
from skillsoup.registry.store import StateStore
from skillsoup.registry.values import AddResult, DemoMatch, SkillHit, SkillInfo, capture_skill, skill_token_ids

__all__ = [
    "AddResult", "DemoMatch", "DoctorReport", "Problem", "RegistryLock", "SkillIndex", "SkillInfo", "SkillHit",
    "SkillRegistry", "StateStore", "capture_skill", "skill_token_ids",
]
