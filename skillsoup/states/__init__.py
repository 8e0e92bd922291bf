"""Skill states as values: what a state holds and how it is saved, and how states are mixed.

    SkillState             a batch of states: conv windows and recurrent states in one flat buffer,
                           attention KV for hybrids; fingerprinted by model (docs/states.md)
    StateLayout            which kinds each model layer holds, and their shapes
    mix / mix_ref          weighted mixing (task arithmetic with ``base=``, KV policies for hybrids,
                           ``out=`` a preallocated state), fast path and specification
    mix_decay / _ref       sequential composition of chunk states (ChunkState)
    StateCache             skill states in memory, LRU within a byte budget
    StateBank              the cache on the model's device, fed from pinned host memory (bank.py)
This package never imports a model: states come from ``skillsoup.models`` and go back to it.
"""

from skillsoup.states.bank import StateBank
from skillsoup.states.cache import StateCache
from skillsoup.states.decay import ChunkState, mix_decay, mix_decay_ref
from skillsoup.states.layout import StateLayout
from skillsoup.states.mixing import CONV_POLICIES, KV_POLICIES, mix, mix_ref, mix_rows, parse_layers, parse_policies
from skillsoup.states.state import SkillState, check_compatible, relative_error, relative_state_error

__all__ = [
    "CONV_POLICIES", "KV_POLICIES", "ChunkState", "SkillState", "StateBank", "StateCache", "StateLayout", "check_compatible", "mix",
    "mix_decay", "mix_decay_ref", "mix_ref", "mix_rows", "parse_layers", "parse_policies", "relative_error",
    "relative_state_error",
]
