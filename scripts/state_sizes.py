"""How big a skill's state is at real checkpoints' shapes, computed from their configs alone.

    python scripts/state_sizes.py            # the README table (Markdown)

Each entry holds the key numbers of the checkpoint's published config.json (the Hugging Face hub is
unreachable from the machines this was written on: the numbers were read from copies of those files
in public code, and checked against each other where two copies existed). The layout comes from
``skillsoup.models.architectures`` (the same code the runtime uses, checked against running models in
tests/models/test_hybrid_models.py); bytes are float32, as states are kept in memory and on disk.
"""

from __future__ import annotations

import sys

LIN, ATT = "linear_attention", "full_attention"


def _every(n: int, period: int, offset: int, hit: str, miss: str) -> list[str]:
    return [hit if i % period == offset else miss for i in range(n)]


# name -> (model_type, transformers config class, key config.json numbers)
CHECKPOINTS = {
    "state-spaces/mamba-130m-hf": ("mamba", "MambaConfig", dict(
        hidden_size=768, num_hidden_layers=24, state_size=16, conv_kernel=4, expand=2)),
    "state-spaces/mamba-2.8b-hf": ("mamba", "MambaConfig", dict(
        hidden_size=2560, num_hidden_layers=64, state_size=16, conv_kernel=4, expand=2)),
    "state-spaces/mamba2-2.7b": ("mamba2", "Mamba2Config", dict(
        hidden_size=2560, num_hidden_layers=64, state_size=128, head_dim=64, num_heads=80, n_groups=1, expand=2,
        conv_kernel=4)),
    "tiiuae/falcon-mamba-7b": ("falcon_mamba", "FalconMambaConfig", dict(
        hidden_size=4096, num_hidden_layers=64, intermediate_size=8192, state_size=16, conv_kernel=4)),
    "ai21labs/AI21-Jamba-1.5-Mini": ("jamba", "JambaConfig", dict(  # attention every 8 layers from layer 4
        hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, attn_layer_period=8,
        attn_layer_offset=4, mamba_d_state=16, mamba_d_conv=4, mamba_expand=2)),
    "Zyphra/Zamba2-7B": ("zamba2", "Zamba2Config", dict(  # 13 of 81 layers add the shared attention block
        hidden_size=3584, num_hidden_layers=81,
        layers_block_type=[LIN] * 6 + ["hybrid"] + [LIN] * 4 + ["hybrid"] + ([LIN] * 5 + ["hybrid"]) * 11 + [LIN] * 3,
        mamba_d_state=64, mamba_d_conv=4, mamba_expand=2, mamba_ngroups=2, n_mamba_heads=112,
        num_attention_heads=32, num_key_value_heads=32)),
    "ibm-granite/granite-4.0-h-tiny": ("granitemoehybrid", "GraniteMoeHybridConfig", dict(
        hidden_size=1536, num_hidden_layers=40, num_attention_heads=12, num_key_value_heads=4,
        layer_types=[LIN] * 5 + [ATT] + ([LIN] * 9 + [ATT]) * 3 + [LIN] * 4,
        mamba_n_heads=48, mamba_d_head=64, mamba_n_groups=1, mamba_d_state=128, mamba_d_conv=4, mamba_expand=2)),
    "nvidia/NVIDIA-Nemotron-Nano-9B-v2": ("nemotron_h", "NemotronHConfig", dict(
        hidden_size=4480, hybrid_override_pattern="M-M-M-MM-M-M-M*-M-M-M*-M-M-M-M*-M-M-M-M*-M-MM-M-M-M-M-M-",
        num_attention_heads=40, num_key_value_heads=8, head_dim=128, ssm_state_size=128, mamba_num_heads=128,
        mamba_head_dim=80, n_groups=8, conv_kernel=4, expand=2)),
    "tiiuae/Falcon-H1-7B-Instruct": ("falcon_h1", "FalconH1Config", dict(  # attention and Mamba-2 in every layer
        hidden_size=3072, num_hidden_layers=44, num_attention_heads=12, num_key_value_heads=2, head_dim=128,
        mamba_d_ssm=3072, mamba_n_heads=24, mamba_d_head=128, mamba_n_groups=1, mamba_d_state=256, mamba_d_conv=4)),
    "Qwen/Qwen3-Next-80B-A3B-Instruct": ("qwen3_next", "Qwen3NextConfig", dict(  # full attention every 4th layer
        hidden_size=2048, num_hidden_layers=48, num_attention_heads=16, num_key_value_heads=2, head_dim=256,
        layer_types=([LIN] * 3 + [ATT]) * 12, linear_num_key_heads=16, linear_key_head_dim=128,
        linear_num_value_heads=32, linear_value_head_dim=128, linear_conv_kernel_dim=4)),
    "Qwen/Qwen3.5-9B": ("qwen3_5_text", "Qwen3_5TextConfig", dict(  # its text_config
        hidden_size=4096, num_hidden_layers=32, num_attention_heads=16, num_key_value_heads=4, head_dim=256,
        layer_types=([LIN] * 3 + [ATT]) * 8, linear_num_key_heads=16, linear_key_head_dim=128,
        linear_num_value_heads=32, linear_value_head_dim=128, linear_conv_kernel_dim=4)),
    "Qwen/Qwen3.5-35B-A3B": ("qwen3_5_moe_text", "Qwen3_5MoeTextConfig", dict(  # its text_config
        hidden_size=2048, num_hidden_layers=40, num_attention_heads=16, num_key_value_heads=2, head_dim=256,
        layer_types=([LIN] * 3 + [ATT]) * 10, linear_num_key_heads=16, linear_key_head_dim=128,
        linear_num_value_heads=32, linear_value_head_dim=128, linear_conv_kernel_dim=4)),
}


def layout_of(name: str):
    import transformers

    from skillsoup.models.architectures import architecture

    model_type, config_class, numbers = CHECKPOINTS[name]
    config = getattr(transformers, config_class)(**numbers)
    return architecture(model_type).layout(config)


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def rows() -> list[tuple[str, str, str, int, int]]:
    """(checkpoint, model type, layers, fixed-size bytes, KV bytes per 1,000 tokens) per entry."""
    out = []
    for name, (model_type, _, _) in CHECKPOINTS.items():
        layout = layout_of(name)
        fixed = layout.nbytes(0)
        per_1k = layout.nbytes(1000) - fixed
        layers = f"{layout.n_recurrent} rec. / {layout.n_attention} att. of {layout.num_layers}"
        out.append((name, model_type, layers, fixed, per_1k))
    return out


def main(argv=None) -> list[tuple]:
    table = rows()
    print("| checkpoint | model type | layers with state | conv + recurrent (fixed) | KV per 1,000 tokens | "
          "skill of 1,000 tokens |")
    print("|---|---|---|---|---|---|")
    for name, model_type, layers, fixed, per_1k in table:
        kv = mib(per_1k) if per_1k else "-"
        print(f"| {name} | `{model_type}` | {layers} | {mib(fixed)} | {kv} | {mib(fixed + per_1k)} |")
    return table


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
