"""The "hf" backend: a transformers hybrid model (Jamba, Zamba2, Bamba, GraniteMoeHybrid, NemotronH,
FalconH1, Qwen3-Next, Qwen3.5) run by transformers itself from a cache rebuilt from the SkillState.

Why this is exact: transformers 5.23 continues Mamba-2 mixers and gated DeltaNet layers exactly
from an injected cache over any number of tokens; its Mamba-1 mixers (Jamba) restart their scan
from zero, so they get skillsoup's exact mixer instead (``mamba1.install_exact_forward``). Three
things are always passed explicitly rather than left to the model's defaults:
    position_ids     n_tokens + arange(q) per row (some models, e.g. Bamba, start from 0 otherwise)
    attention mask   one float mask [b, 1, q, T + q] for every attention layer: the state's per-token
                     bias over its T KV tokens (0 as captured, log(w) after ``mix(kv="concat")``,
                     -inf for padding), then causal over the new tokens
    the cache        a fresh ``DynamicCache`` per call, so the input state is never modified

At load, one token is run through the model to learn the dtypes it keeps each kind in and to check
the layout computed from the config against the shapes it really produces.
"""

from __future__ import annotations

import logging

import torch

from skillsoup.errors import ModelLoadError
from skillsoup.models import mamba1
from skillsoup.models.hf_cache import CacheDtypes, build_cache, check_layers, new_cache, state_after
from skillsoup.states.state import SkillState

log = logging.getLogger(__name__)

MASK_ATTENTION = ("sdpa", "eager")  # implementations that take an additive float mask


class HFBackend:
    def __init__(self, hf_model, architecture, ops):
        self.hf = hf_model
        self.architecture = architecture
        self.ops = ops
        if hf_model.config._attn_implementation not in MASK_ATTENTION:
            hf_model.set_attn_implementation("sdpa")
        if self.compute_dtype == torch.float64 and type(hf_model)._can_set_experts_implementation():
            hf_model.set_experts_implementation("eager")  # MoE experts: grouped_mm has no float64 kernel
        self.layout = architecture.layout(hf_model.config)
        self.dtypes = self._probe()

    @property
    def ops(self):
        return self._ops

    @ops.setter
    def ops(self, ops) -> None:
        """The ops the Mamba-1 mixers (Jamba) run: installed into the model's mixers again."""
        self._ops = ops
        if self.architecture.mixer == "mamba1":
            n = mamba1.install_exact_forward(self.hf, ops)
            log.info("%s: %d Mamba-1 mixers run skillsoup's exact forward (%s ops)", self.architecture.model_type, n,
                     ops.name)

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.hf.get_input_embeddings().weight.dtype

    def _probe(self) -> CacheDtypes:
        """One token from a fresh cache: the dtypes of each kind, and the layout's shapes checked."""
        device = self.hf.get_input_embeddings().weight.device
        cache = new_cache(self.hf.config)
        check_layers(cache, self.layout)
        with torch.no_grad():
            self.hf(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device), past_key_values=cache,
                    use_cache=True, logits_to_keep=1)
        conv = recurrent = kv = self.compute_dtype
        for j, i in enumerate(self.layout.recurrent_layers):
            layer = cache.layers[i]
            got = (tuple(layer.conv_states[0].shape[1:]), tuple(layer.recurrent_states[0].shape[1:]))
            if got != (self.layout.conv_shape, self.layout.recurrent_shape):
                raise ModelLoadError(f"{self.hf.config.model_type}: layer {i} keeps conv/recurrent states {got}, the "
                                     f"config gives {(self.layout.conv_shape, self.layout.recurrent_shape)}")
            conv, recurrent = layer.conv_states[0].dtype, layer.recurrent_states[0].dtype
        for i in self.layout.attention_layers:
            keys, values = cache.layers[i].keys, cache.layers[i].values
            got = (keys.shape[1], keys.shape[3], values.shape[3])
            if got != self.layout.kv_shape:
                raise ModelLoadError(f"{self.hf.config.model_type}: layer {i} keeps KV {got}, the config gives "
                                     f"{self.layout.kv_shape}")
            kv = keys.dtype
        return CacheDtypes(conv, recurrent, kv)

    def forward(self, ids: torch.Tensor, start: SkillState, logits: str, log_decay=None):
        """ids [b, q] from ``start`` -> (logits per ``logits`` or None, new state)."""
        del log_decay  # callers check: decay mixing needs a recurrent-only model
        bsz, q = ids.shape
        cache = build_cache(self.hf.config, start, ids.device, self.dtypes)
        positions = torch.as_tensor(start.n_tokens, device=ids.device)[:, None] + torch.arange(q, device=ids.device)
        masks = None
        if start.layout.has_kv:
            masks = {"full_attention": attention_mask(start.kv_bias.to(ids.device), q, self.compute_dtype),
                     "linear_attention": None}
        out = self.hf(input_ids=ids, past_key_values=cache, position_ids=positions, attention_mask=masks,
                      use_cache=True, logits_to_keep=0 if logits == "all" else 1)
        state = state_after(cache, start, positions)
        if logits == "none":
            return None, state
        return (out.logits[:, -1] if logits == "last" else out.logits).float(), state

    def step(self, ids: torch.Tensor, start: SkillState):
        """ids [b] -> (logits [b, vocab], new state)."""
        return self.forward(ids[:, None], start, "last")


def attention_mask(kv_bias: torch.Tensor, q: int, dtype: torch.dtype) -> torch.Tensor:
    """[b, 1, q, T + q] additive mask: each row's KV bias over the T past tokens, then causal over
    the q new ones. -inf becomes the dtype's lowest value (as transformers' own masks do)."""
    bsz, n_past = kv_bias.shape
    lowest = torch.finfo(dtype).min
    past = kv_bias.to(dtype).clamp_min(lowest)[:, None, None, :].expand(bsz, 1, q, n_past)
    causal = torch.full((q, q), lowest, dtype=dtype, device=kv_bias.device).triu(1)
    return torch.cat([past, causal.expand(bsz, 1, q, q)], dim=-1)

