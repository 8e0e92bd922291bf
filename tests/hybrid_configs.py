"""Tiny random checkpoints of every hybrid / non-Mamba architecture skillsoup runs, built from
transformers' own config classes: odd sizes where the architecture allows (conv width 3, d_state
5, vocab 97; attention head dims stay even for RoPE) and more than one attention layer.

``build_hybrid(path, model_type)`` saves one with a word-level tokenizer, to be loaded back through
``skillsoup.load_model`` like a real checkpoint.
"""

from __future__ import annotations

import torch

VOCAB = 97
IDS = dict(vocab_size=VOCAB, pad_token_id=0, bos_token_id=1, eos_token_id=2)
LIN, ATT = "linear_attention", "full_attention"
TWO_ATTENTION = [LIN, ATT, LIN, ATT, LIN]
DELTANET = dict(hidden_size=40, num_attention_heads=4, num_key_value_heads=2, head_dim=10, linear_conv_kernel_dim=3,
                linear_key_head_dim=6, linear_value_head_dim=5, linear_num_key_heads=2, linear_num_value_heads=4,
                num_hidden_layers=5, layer_types=TWO_ATTENTION)
MOE = dict(moe_intermediate_size=12, shared_expert_intermediate_size=12, num_experts=3, num_experts_per_tok=2)

HYBRID_TYPES = ["falcon_mamba", "jamba", "zamba2", "bamba", "granitemoehybrid", "nemotron_h", "falcon_h1", "qwen3_next",
                "qwen3_5_text", "qwen3_5_moe_text"]


def tiny_hybrid_config(model_type: str):
    import transformers as T

    if model_type == "falcon_mamba":
        return T.FalconMambaConfig(hidden_size=36, num_hidden_layers=3, state_size=5, conv_kernel=3, expand=2, **IDS)
    if model_type == "jamba":
        return T.JambaConfig(hidden_size=40, intermediate_size=24, num_hidden_layers=6, num_attention_heads=4,
                             num_key_value_heads=2, attn_layer_period=3, attn_layer_offset=1, expert_layer_period=2,
                             expert_layer_offset=1, num_experts=3, num_experts_per_tok=2, mamba_d_state=5,
                             mamba_d_conv=3, mamba_expand=2, **IDS)
    if model_type == "zamba2":
        return T.Zamba2Config(hidden_size=40, num_hidden_layers=5, layers_block_type=[LIN, "hybrid", LIN, "hybrid", LIN],
                              mamba_d_state=5, mamba_d_conv=3, mamba_expand=2, n_mamba_heads=4, mamba_ngroups=2,
                              num_attention_heads=4, num_key_value_heads=4, intermediate_size=28, num_mem_blocks=2,
                              use_mem_rope=True, chunk_size=8, adapter_rank=6, use_shared_attention_adapter=True, **IDS)
    if model_type == "bamba":
        return T.BambaConfig(hidden_size=40, intermediate_size=24, num_hidden_layers=5, num_attention_heads=4,
                             num_key_value_heads=2, attn_layer_indices=[1, 3], mamba_n_heads=4, mamba_n_groups=2,
                             mamba_d_state=5, mamba_d_conv=3, mamba_expand=2, mamba_chunk_size=8, **IDS)
    if model_type == "granitemoehybrid":
        return T.GraniteMoeHybridConfig(hidden_size=40, intermediate_size=24, num_hidden_layers=5, num_attention_heads=4,
                                        num_key_value_heads=2, layer_types=TWO_ATTENTION, mamba_n_heads=4,
                                        mamba_n_groups=2, mamba_d_state=5, mamba_d_conv=3, mamba_expand=2,
                                        mamba_chunk_size=8, num_local_experts=3, num_experts_per_tok=2,
                                        shared_intermediate_size=20, position_embedding_type="rope", **IDS)
    if model_type == "nemotron_h":
        return T.NemotronHConfig(hidden_size=40, layers_block_type=[LIN, ATT, "moe", LIN, ATT, "mlp"],
                                 num_attention_heads=4, num_key_value_heads=2, head_dim=10, intermediate_size=24,
                                 ssm_state_size=5, mamba_num_heads=4, mamba_head_dim=15, n_groups=2, conv_kernel=3,
                                 expand=2, chunk_size=8, n_routed_experts=3, num_experts_per_tok=2,
                                 moe_intermediate_size=12, moe_shared_expert_intermediate_size=12, n_shared_experts=1,
                                 **IDS)
    if model_type == "falcon_h1":
        return T.FalconH1Config(hidden_size=40, intermediate_size=24, num_hidden_layers=3, num_attention_heads=4,
                                num_key_value_heads=2, mamba_d_ssm=40, mamba_n_heads=4, mamba_n_groups=2,
                                mamba_d_state=5, mamba_d_conv=3, mamba_expand=2, mamba_chunk_size=8, **IDS)
    if model_type == "qwen3_next":
        return T.Qwen3NextConfig(intermediate_size=24, **DELTANET, **MOE, **IDS)
    if model_type == "qwen3_5_text":
        return T.Qwen3_5TextConfig(intermediate_size=24, **DELTANET, **IDS)
    if model_type == "qwen3_5_moe_text":
        return T.Qwen3_5MoeTextConfig(**DELTANET, **MOE, **IDS)
    raise ValueError(f"no tiny config for {model_type!r}")


def build_hybrid(path, model_type: str, seed: int = 0):
    """Save a random checkpoint of ``model_type`` (and a tokenizer) to ``path``; return ``path``."""
    from helpers import save_tiny_tokenizer
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_hybrid_config(model_type))
    with torch.no_grad():  # larger, varied step sizes so the recurrent states' decay matters
        for name, p in model.named_parameters():
            if name.endswith(("dt_proj.bias", "dt_bias")):
                p.uniform_(-3.0, 0.5)
    model.save_pretrained(path)
    save_tiny_tokenizer(path, VOCAB)
    return path
