"""The architectures skillsoup runs: per model type, the transformers class, the backend, what its
recurrent layers are, and the shape of its state computed from its config alone.

Backends:
    "stack"   skillsoup's own forward of the whole stack (Mamba, Mamba-2, FalconMamba): exact
              continuation from any state, Triton kernels on CUDA (:mod:`skillsoup.models.stack`)
    "hf"      transformers' own model, driven with a cache rebuilt from the SkillState and explicit
              positions, where its multi-token continuation from a cache is exact (Mamba-2 mixers and
              gated DeltaNet); its Mamba-1 mixers (Jamba), whose scan transformers restarts from zero,
              run skillsoup's exact mixer instead (:mod:`skillsoup.models.hybrid`)

``layout(config)`` needs no weights: the README's state sizes come from real checkpoints' configs
through it, and the tests check it against the shapes the running model produces.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from skillsoup.errors import ModelLoadError
from skillsoup.states.layout import ATTENTION, BOTH, NONE, RECURRENT, StateLayout

# transformers' names for layer types (config.layer_types) -> skillsoup's layer kinds
_LAYER_TYPES = {"linear_attention": RECURRENT, "full_attention": ATTENTION, "hybrid": BOTH, "moe": NONE, "mlp": NONE}


@dataclass(frozen=True)
class Architecture:
    model_type: str
    hf_class: str  # the transformers class loaded
    backend: str  # "stack" or "hf"
    mixer: str  # what the recurrent layers run: "mamba1", "mamba2" or "deltanet"
    shapes: Callable  # config -> (conv shape, recurrent shape) per row and recurrent layer
    examples: tuple[str, ...] = ()  # real checkpoints of this type

    def layout(self, config) -> StateLayout:
        conv, recurrent = self.shapes(config)
        if self.backend == "stack":
            return StateLayout.recurrent_only(config.num_hidden_layers, conv, recurrent)
        kinds = layer_kinds(config)
        has_attention = any(k in (ATTENTION, BOTH) for k in kinds)
        return StateLayout(kinds, conv, recurrent, kv_shape(config) if has_attention else ())


def layer_kinds(config) -> tuple[str, ...]:
    types = list(getattr(config, "layer_types", None) or [])
    unknown = sorted({t for t in types if t not in _LAYER_TYPES})
    if not types or unknown:
        raise ModelLoadError(f"{config.model_type} model with layer types {unknown or 'none listed'}: skillsoup "
                             f"runs {sorted(_LAYER_TYPES)} (sliding-window attention is not supported yet)")
    return tuple(_LAYER_TYPES[t] for t in types)


def kv_shape(config) -> tuple[int, int, int]:
    """(kv heads, key dim, value dim) of the attention layers."""
    head_dim = getattr(config, "attention_head_dim", None) or getattr(config, "head_dim", None) \
        or config.hidden_size // config.num_attention_heads
    return (config.num_key_value_heads or config.num_attention_heads, head_dim, head_dim)


# ---- per mixer: (conv shape, recurrent shape) -------------------------------------------------------
def _mamba1(d_inner: int, d_state: int, conv: int):
    return (d_inner, conv), (d_inner, d_state)


def _mamba2(d_inner: int, heads: int, head_dim: int, groups: int, d_state: int, conv: int):
    return (d_inner + 2 * groups * d_state, conv), (heads, head_dim, d_state)


def _deltanet(c):
    key_dim, value_dim = c.linear_num_key_heads * c.linear_key_head_dim, c.linear_num_value_heads * c.linear_value_head_dim
    return (2 * key_dim + value_dim, c.linear_conv_kernel_dim), \
        (c.linear_num_value_heads, c.linear_key_head_dim, c.linear_value_head_dim)


def _falcon_h1(c):
    d_inner = c.mamba_d_ssm or c.mamba_expand * c.hidden_size
    return _mamba2(d_inner, c.mamba_n_heads, c.mamba_d_head, c.mamba_n_groups, c.mamba_d_state, c.mamba_d_conv)


_QWEN35 = ("Qwen/Qwen3.5-9B", "Qwen/Qwen3.5-4B")
_QWEN35_MOE = ("Qwen/Qwen3.5-35B-A3B",)
_ALL = [
    Architecture("mamba", "MambaForCausalLM", "stack", "mamba1",
                 lambda c: _mamba1(c.intermediate_size, c.state_size, c.conv_kernel),
                 ("state-spaces/mamba-130m-hf", "state-spaces/mamba-2.8b-hf")),
    Architecture("falcon_mamba", "FalconMambaForCausalLM", "stack", "mamba1",
                 lambda c: _mamba1(c.intermediate_size, c.state_size, c.conv_kernel), ("tiiuae/falcon-mamba-7b",)),
    Architecture("mamba2", "Mamba2ForCausalLM", "stack", "mamba2",
                 lambda c: _mamba2(int(c.expand * c.hidden_size), c.num_heads, c.head_dim, c.n_groups, c.state_size,
                                   c.conv_kernel), ("state-spaces/mamba2-2.7b",)),
    Architecture("jamba", "JambaForCausalLM", "hf", "mamba1",
                 lambda c: _mamba1(c.mamba_expand * c.hidden_size, c.mamba_d_state, c.mamba_d_conv),
                 ("ai21labs/AI21-Jamba-1.5-Mini", "ai21labs/AI21-Jamba-Mini-1.7")),
    Architecture("zamba2", "Zamba2ForCausalLM", "hf", "mamba2",
                 lambda c: _mamba2(c.mamba_expand * c.hidden_size, c.n_mamba_heads, c.mamba_headdim, c.mamba_ngroups,
                                   c.mamba_d_state, c.mamba_d_conv), ("Zyphra/Zamba2-7B", "Zyphra/Zamba2-1.2B")),
    Architecture("bamba", "BambaForCausalLM", "hf", "mamba2",
                 lambda c: _mamba2(c.mamba_expand * c.hidden_size, c.mamba_n_heads, c.mamba_d_head, c.mamba_n_groups,
                                   c.mamba_d_state, c.mamba_d_conv), ("ibm-ai-platform/Bamba-9B-v2",)),
    Architecture("granitemoehybrid", "GraniteMoeHybridForCausalLM", "hf", "mamba2",
                 lambda c: _mamba2(c.mamba_expand * c.hidden_size, c.mamba_n_heads, c.mamba_d_head, c.mamba_n_groups,
                                   c.mamba_d_state, c.mamba_d_conv),
                 ("ibm-granite/granite-4.0-h-tiny", "ibm-granite/granite-4.0-h-small")),
    Architecture("nemotron_h", "NemotronHForCausalLM", "hf", "mamba2",
                 lambda c: _mamba2(c.mamba_num_heads * c.mamba_head_dim, c.mamba_num_heads, c.mamba_head_dim,
                                   c.n_groups, c.ssm_state_size, c.conv_kernel),
                 ("nvidia/NVIDIA-Nemotron-Nano-9B-v2", "nvidia/Nemotron-H-8B-Base-8K")),
    Architecture("falcon_h1", "FalconH1ForCausalLM", "hf", "mamba2", _falcon_h1,
                 ("tiiuae/Falcon-H1-7B-Instruct", "tiiuae/Falcon-H1-3B-Instruct")),
    Architecture("qwen3_next", "Qwen3NextForCausalLM", "hf", "deltanet", _deltanet,
                 ("Qwen/Qwen3-Next-80B-A3B-Instruct",)),
    Architecture("qwen3_5_text", "Qwen3_5ForCausalLM", "hf", "deltanet", _deltanet, _QWEN35),
    Architecture("qwen3_5", "Qwen3_5ForCausalLM", "hf", "deltanet", _deltanet, _QWEN35),  # the VLM's text model
    Architecture("qwen3_5_moe_text", "Qwen3_5MoeForCausalLM", "hf", "deltanet", _deltanet, _QWEN35_MOE),
    Architecture("qwen3_5_moe", "Qwen3_5MoeForCausalLM", "hf", "deltanet", _deltanet, _QWEN35_MOE),
]
ARCHITECTURES: dict[str, Architecture] = {a.model_type: a for a in _ALL}


def architecture(model_type: str) -> Architecture:
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        raise ModelLoadError(f"a {model_type!r} model is not supported; skillsoup runs {', '.join(sorted(ARCHITECTURES))}") \
            from None
