"""Skill states as values: what a state holds and how it is saved, and how states are mixed.

    SkillState             per-layer conv and recurrent states of a batch, fingerprinted by model
    mix / mix_ref          weighted mixing (task arithmetic with ``base=``), fast path and specification
    mix_decay / _ref       sequential composition of chunk states (ChunkState)
    StateCache             skill states in memory, LRU within a byte budget
This package never imports a model: states come from ``skillsoup.models`` and go back to it.
"""

from skillsoup.states.cache import StateCache
from skillsoup.states.decay import ChunkState, mix_decay, mix_decay_ref
from skillsoup.states.mixing import CONV_POLICIES, mix, mix_ref, parse_layers
from skillsoup.states.state import SkillState, check_compatible, relative_error, relative_state_error

__all__ = [
    "CONV_POLICIES", "ChunkState", "SkillState", "StateCache", "check_compatible", "mix", "mix_decay", "mix_decay_ref",
    "mix_ref", "parse_layers", "relative_error", "relative_state_error",
]
