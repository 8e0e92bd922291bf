"""Every non-Mamba architecture skillsoup runs, as a tiny random checkpoint saved and loaded through
``load_model``: the invariant that matters most (continuing from a captured state equals one pass
over demonstrations + query), file round trips, mixing under both KV policies, and generation."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close
from hybrid_configs import HYBRID_TYPES, build_hybrid

from skillsoup import SkillState, load_model, mix
from skillsoup.models.architectures import architecture
from skillsoup.states import relative_state_error

RATIO = 1e-4
DEMOS = 40  # demonstration tokens per row


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    pass


@pytest.fixture(scope="session", params=HYBRID_TYPES)
def hybrid(request, tmp_path_factory):
    path = build_hybrid(tmp_path_factory.mktemp(request.param), request.param)
    return load_model(path)


def _ids(n, seed, rows=2):
    return torch.randint(3, 97, (rows, n), generator=torch.Generator().manual_seed(seed))


def test_one_pass_equals_transformers_own_forward(hybrid):
    """The backend reproduces transformers' plain forward (a fresh, unpatched model) from the start."""
    from transformers import AutoModelForCausalLM

    ids = _ids(DEMOS + 7, seed=1)
    reference = AutoModelForCausalLM.from_pretrained(hybrid.source).eval()
    with torch.no_grad():
        want = reference(ids).logits
    assert_close("one pass vs transformers", hybrid.forward(ids)[0], want, RATIO)


@pytest.mark.parametrize("q", [1, 7, 33])
def test_forward_from_captured_state_equals_one_pass(hybrid, q):
    demos, query = _ids(DEMOS, seed=2), _ids(q, seed=3)
    whole, whole_state = hybrid.forward(torch.cat([demos, query], dim=1))
    got, after = hybrid.forward(query, hybrid.capture(demos))
    assert_close(f"logits, query of {q}", got, whole[:, DEMOS:], RATIO)
    assert after.n_tokens == whole_state.n_tokens == [DEMOS + q] * 2
    assert relative_state_error(after, whole_state) <= RATIO


def test_layout_from_config_matches_the_running_model(hybrid):
    layout = architecture(hybrid.arch).layout(hybrid.config)
    assert layout == hybrid.layout  # the load-time probe checked the shapes; the config alone gives them
    state = hybrid.capture(_ids(11, seed=4, rows=1))
    assert state.nbytes == layout.nbytes(n_kv_tokens=11 if layout.has_kv else 0)
    assert state.layout.num_layers == hybrid.config.num_hidden_layers


def test_save_load_round_trip(hybrid, tmp_path):
    state = hybrid.capture(_ids(DEMOS, seed=5))
    loaded = SkillState.load(state.save(tmp_path / "s.safetensors"), model=hybrid)
    query = _ids(5, seed=6)
    assert torch.equal(hybrid.forward(query, loaded)[0], hybrid.forward(query, state)[0])


@pytest.mark.parametrize("kv", ["top", "concat"])
def test_one_hot_mix_reproduces_each_skill(hybrid, kv):
    """Skills of different lengths: one-hot weights give each skill's own continuation exactly."""
    a, b = hybrid.capture(_ids(DEMOS, seed=7, rows=1)), hybrid.capture(_ids(DEMOS - 13, seed=8, rows=1))
    query = _ids(6, seed=9, rows=1)
    for weights, skill in (([1.0, 0.0], a), ([0.0, 1.0], b)):
        mixed = mix([a, b], weights, kv=kv)
        assert_close(f"one-hot {weights} ({kv})", hybrid.forward(query, mixed)[0], hybrid.forward(query, skill)[0], 1e-6)


@pytest.mark.parametrize("kv", ["top", "concat"])
def test_mixing_is_linear_on_the_recurrent_parts(hybrid, kv):
    a, b = hybrid.capture(_ids(DEMOS, seed=7, rows=1)), hybrid.capture(_ids(DEMOS - 13, seed=8, rows=1))
    mixed = mix([a, b], [0.3, 0.7], kv=kv)
    for j in range(hybrid.layout.n_recurrent):
        assert_close(f"recurrent {j}", mixed.recurrent[j], 0.3 * a.recurrent[j] + 0.7 * b.recurrent[j], 1e-6)
        assert_close(f"conv {j}", mixed.conv[j], 0.3 * a.conv[j] + 0.7 * b.conv[j], 1e-6)


def test_concat_weights_take_effect(hybrid):
    if not hybrid.layout.has_kv:
        pytest.skip("no attention layer")
    a, b = hybrid.capture(_ids(DEMOS, seed=7, rows=1)), hybrid.capture(_ids(DEMOS, seed=8, rows=1))
    query = _ids(6, seed=9, rows=1)
    even = hybrid.forward(query, mix([a, b], [0.5, 0.5], kv="concat"))[0]
    skewed = hybrid.forward(query, mix([a, b], [0.9, 0.1], kv="concat"))[0]
    top = hybrid.forward(query, mix([a, b], [0.5, 0.5], kv="top"))[0]
    assert (even - skewed).abs().max() > 1e-4 and (even - top).abs().max() > 1e-4


def test_greedy_generation_from_a_state_equals_demonstrations_in_the_prompt(hybrid):
    demos, query = _ids(DEMOS, seed=10, rows=1), _ids(5, seed=11, rows=1)
    from_state = list(hybrid.generate_ids(query, hybrid.capture(demos), max_new_tokens=8))
    in_prompt = list(hybrid.generate_ids(torch.cat([demos, query], dim=1), None, max_new_tokens=8))
    assert from_state == in_prompt and len(from_state) > 0


def test_step_on_rows_with_different_kv_lengths(hybrid):
    """What a server does: rows of one-row states of different lengths batched with cat, decoded
    with step; padding is exact."""
    short, long = hybrid.capture(_ids(9, seed=12, rows=1)), hybrid.capture(_ids(DEMOS, seed=13, rows=1))
    batch = SkillState.cat([short, long])
    logits, after = hybrid.step([5, 6], batch)
    for row, (state, token) in enumerate(((short, 5), (long, 6))):
        alone, alone_after = hybrid.step([token], state)
        assert_close(f"row {row}", logits[row : row + 1], alone, 1e-5)
        assert relative_state_error(after.rows([row]), alone_after) <= 1e-5


def test_qwen3_5_vision_language_checkpoint_loads_as_its_text_model(tmp_path):
    """Qwen3.5 checkpoints are published as vision-language models (model type qwen3_5): load_model
    takes their text model, which reads text exactly as the whole model does."""
    import transformers
    from helpers import save_tiny_tokenizer
    from hybrid_configs import DELTANET, IDS

    vision = dict(depth=1, hidden_size=16, intermediate_size=16, num_heads=2, out_hidden_size=DELTANET["hidden_size"],
                  patch_size=4, spatial_merge_size=1, temporal_patch_size=1)
    torch.manual_seed(0)
    vlm = transformers.Qwen3_5ForConditionalGeneration(
        transformers.Qwen3_5Config(text_config=dict(intermediate_size=24, **DELTANET, **IDS), vision_config=vision))
    vlm.save_pretrained(tmp_path)
    save_tiny_tokenizer(tmp_path, 97)
    model = load_model(tmp_path)
    ids = _ids(DEMOS + 7, seed=14, rows=1)
    with torch.no_grad():
        want = vlm.eval()(input_ids=ids).logits
    assert model.arch == "qwen3_5_text" and model.layout.n_attention == 2
    assert_close("text model vs VLM", model.forward(ids)[0], want, RATIO)
    assert_close("continued", model.forward(ids[:, DEMOS:], model.capture(ids[:, :DEMOS]))[0], want[:, DEMOS:], RATIO)


def test_moe_hybrid_runs_in_float64(tmp_path):
    """transformers' grouped_mm experts have no float64 kernel: the backend switches them to eager."""
    model = load_model(build_hybrid(tmp_path, "qwen3_next"), dtype=torch.float64)
    ids = _ids(DEMOS + 5, seed=15, rows=1)
    whole = model.forward(ids)[0]
    assert_close("float64 continuation", model.forward(ids[:, DEMOS:], model.capture(ids[:, :DEMOS]))[0],
                 whole[:, DEMOS:], 1e-6)  # the state itself is kept in float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("model_type", HYBRID_TYPES)
def test_continuation_on_cuda_in_fp32(tmp_path, model_type):
    """The same invariant on the GPU: fp32 weights, TF32 off, transformers' torch paths for the hybrids
    (and the Triton kernels for FalconMamba and Jamba's Mamba-1 mixers)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        model = load_model(build_hybrid(tmp_path, model_type), device="cuda")
        demos, query = _ids(DEMOS, seed=2), _ids(33, seed=3)
        whole = model.forward(torch.cat([demos, query], dim=1))[0]
        assert_close(f"{model_type} on cuda", model.forward(query, model.capture(demos))[0], whole[:, DEMOS:], RATIO)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
