"""Convert between SkillState and transformers' ``DynamicCache`` (5.23 API), for users who want
to hand a skill state to ``MambaForCausalLM.generate`` or compare with transformers.

transformers ignores an injected state unless the layer is initialised, filled, and marked as
having a previous state. Note that transformers 5.23 continues Mamba-1 exactly only token by
token; StateModel.forward is the exact multi-token path.
"""

from __future__ import annotations

from skillsoup.states.state import SkillState


def to_hf_cache(model, state: SkillState):
    """A ``DynamicCache`` holding ``state`` (in the model's dtype), ready for ``cache_params=``."""
    from transformers import DynamicCache

    model.check_state(state)
    cache = DynamicCache(config=model.config)
    for i, layer in enumerate(cache.layers):
        conv, ssm = state.conv[i].to(model.device, model.dtype), state.ssm[i].to(model.device, model.dtype)
        layer.lazy_initialization(conv_states=conv, recurrent_states=ssm)
        layer.conv_states[0].copy_(conv)
        layer.recurrent_states[0].copy_(ssm)
        layer.has_previous_state[0] = True
    return cache


def from_hf_cache(model, cache, n_tokens: int) -> SkillState:
    """The SkillState held by a transformers cache after ``n_tokens`` tokens (copied, float32)."""
    conv = [layer.conv_states[0].detach().float().clone() for layer in cache.layers]
    ssm = [layer.recurrent_states[0].detach().float().clone() for layer in cache.layers]
    state = SkillState(conv, ssm, [n_tokens] * conv[0].shape[0], model.fingerprint, model.arch)
    model.check_state(state)
    return state
