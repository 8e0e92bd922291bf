"""Convert between SkillState and transformers' ``DynamicCache`` (5.23 API), for any layout.

A ``DynamicCache(config)`` holds one object per layer: ``LinearAttentionLayer`` (a conv window and a
recurrent state), ``DynamicLayer`` (attention keys and values), ``LinearAttentionAndFullAttentionLayer``
(both) or ``DummyLayer`` (nothing). transformers ignores an injected recurrent state unless the layer
is initialised, filled and marked as having a previous state; attention layers take their tokens
through ``update``. The hybrid backend rebuilds a cache per call with :func:`build_cache` and reads
the new state back with :func:`read_cache`; :func:`to_hf_cache` / :func:`from_hf_cache` are the same
for users who hand a state to ``model.hf.generate`` or compare with transformers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from skillsoup.errors import StateMismatchError
from skillsoup.states.layout import StateLayout
from skillsoup.states.state import SkillState


@dataclass(frozen=True)
class CacheDtypes:
    """The dtypes the model keeps each kind in (what a fresh prefill of its own would produce)."""

    conv: torch.dtype
    recurrent: torch.dtype
    kv: torch.dtype


def new_cache(config):
    from transformers import DynamicCache

    return DynamicCache(config=config)


def layer_kind_of(layer) -> tuple[bool, bool]:
    """(holds a recurrent state, holds attention KV) for one cache layer object."""
    from transformers.cache_utils import CacheLayerMixin, LinearAttentionCacheLayerMixin

    return isinstance(layer, LinearAttentionCacheLayerMixin), isinstance(layer, CacheLayerMixin)


def check_layers(cache, layout: StateLayout) -> None:
    """The cache's layer objects hold the kinds the layout says, layer by layer."""
    if len(cache.layers) != layout.num_layers:
        raise StateMismatchError(f"the model's cache has {len(cache.layers)} layers, the state {layout.describe()}")
    rec, att = set(layout.recurrent_layers), set(layout.attention_layers)
    for i, layer in enumerate(cache.layers):
        if layer_kind_of(layer) != (i in rec, i in att):
            raise StateMismatchError(f"layer {i} of the model's cache is a {type(layer).__name__}, the state says "
                                     f"{layout.layer_kinds[i]!r}")


def build_cache(config, state: SkillState, device, dtypes: CacheDtypes, started: bool | None = None):
    """A fresh ``DynamicCache`` holding ``state`` (copied, in the model's dtypes). ``started``: mark
    recurrent layers as continuing (default: when any row has read a token)."""
    cache = new_cache(config)
    check_layers(cache, state.layout)
    started = any(n > 0 for n in state.n_tokens) if started is None else started
    for j, i in enumerate(state.layout.recurrent_layers):
        layer = cache.layers[i]
        conv = state.conv[j].to(device=device, dtype=dtypes.conv)
        recurrent = state.recurrent[j].to(device=device, dtype=dtypes.recurrent)
        layer.lazy_initialization(conv_states=conv, recurrent_states=recurrent)
        layer.conv_states[0].copy_(conv)
        layer.recurrent_states[0].copy_(recurrent)
        layer.has_previous_state[0] = started
    for a, i in enumerate(state.layout.attention_layers):
        cache.layers[i].update(state.keys[a].to(device=device, dtype=dtypes.kv),
                               state.values[a].to(device=device, dtype=dtypes.kv))
    return cache


def read_cache(cache, layout: StateLayout) -> tuple[torch.Tensor, dict | None]:
    """(flat float32 buffer, {keys, values} float32 or None) of a cache after a forward."""
    rec = layout.recurrent_layers
    fixed = torch.cat([cache.layers[i].conv_states[0].float().reshape(-1) for i in rec]
                      + [cache.layers[i].recurrent_states[0].float().reshape(-1) for i in rec]) if rec else torch.zeros(0)
    if not layout.has_kv:
        return fixed, None
    att = layout.attention_layers
    return fixed, {"keys": torch.stack([cache.layers[i].keys.float() for i in att]),
                   "values": torch.stack([cache.layers[i].values.float() for i in att])}


def state_after(cache, start: SkillState, positions: torch.Tensor) -> SkillState:
    """The state a forward of the tokens at ``positions`` [b, q] from ``start`` left in ``cache``:
    the new tokens' KV follow the old ones with bias 0."""
    fixed, kv = read_cache(cache, start.layout)
    q = positions.shape[1]
    if kv is not None:
        kv["positions"] = torch.cat([start.positions.to(positions.device), positions], dim=1)
        kv["kv_bias"] = torch.cat([start.kv_bias.to(positions.device), positions.new_zeros(positions.shape,
                                                                                            dtype=torch.float32)], dim=1)
    n_tokens = [n + q for n in start.n_tokens]
    return SkillState.from_flat(start.layout, fixed.to(positions.device), n_tokens, start.fingerprint, start.arch, kv=kv)


def to_hf_cache(model, state: SkillState):
    """A ``DynamicCache`` holding ``state`` (in the model's dtypes), ready for ``past_key_values=`` (or
    ``cache_params=`` of Mamba models). Pass explicit positions when continuing from it, and note
    that transformers 5.23 continues Mamba-1 mixers exactly only token by token; ``StateModel``
    is the exact multi-token path. A state mixed with ``kv="concat"`` also needs its bias in the
    attention mask (``StateModel.forward`` adds it)."""
    model.check_state(state)
    return build_cache(model.config, state, model.device, model.cache_dtypes, started=True)


def from_hf_cache(model, cache, n_tokens: int) -> SkillState:
    """The SkillState held by a transformers cache after reading ``n_tokens`` tokens from the start of
    text (copied, float32)."""
    layout = model.layout
    check_layers(cache, layout)
    first = cache.layers[(layout.recurrent_layers or layout.attention_layers)[0]]
    batch = first.conv_states[0].shape[0] if layout.recurrent_layers else first.keys.shape[0]
    fixed, kv = read_cache(cache, layout)
    if kv is not None:
        n_kv = kv["keys"].shape[3]
        kv["positions"] = torch.arange(n_kv, device=fixed.device).expand(batch, n_kv).clone()
        kv["kv_bias"] = torch.zeros(batch, n_kv, device=fixed.device)
    state = SkillState.from_flat(layout, fixed, [n_tokens] * batch, model.fingerprint, model.arch, kv=kv)
    model.check_state(state)
    return state
