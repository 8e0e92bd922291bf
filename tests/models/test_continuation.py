"""The invariant that matters most: continuing from a captured state gives the same logits as one
pass over demonstrations + query, and that pass equals transformers' own forward."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close

from skillsoup import SkillState

RATIO = 1e-4  # float32, relative error over all query-token logits


def _ids(model, length, seed, batch=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, model.vocab_size, (batch, length), generator=g)


@pytest.mark.parametrize("demo_len,query_len", [(40, 1), (40, 3), (40, 17), (40, 64), (63, 2), (64, 64), (65, 130)],
                         ids=lambda v: str(v))
def test_injected_state_equals_one_pass(model, demo_len, query_len):
    demos, query = _ids(model, demo_len, 1, batch=2), _ids(model, query_len, 2, batch=2)
    state = model.capture(demos)
    injected, after = model.forward(query, state)
    one_pass, full_state = model.forward(torch.cat([demos, query], dim=1))
    assert_close("query logits", injected, one_pass[:, demo_len:], RATIO)
    for i in range(model.num_layers):
        assert_close(f"ssm.{i}", after.ssm[i], full_state.ssm[i], RATIO)
        assert_close(f"conv.{i}", after.conv[i], full_state.conv[i], RATIO)
    assert after.n_tokens == [demo_len + query_len] * 2


@pytest.mark.parametrize("length", [1, 17, 64, 150])
def test_one_pass_equals_transformers(model, length):
    ids = _ids(model, length, 3, batch=2)
    ours, _ = model.forward(ids)
    with torch.no_grad():
        theirs = model.hf(ids).logits.float()
    assert_close("logits vs transformers", ours, theirs, RATIO)


def test_state_equals_transformers_cache(model):
    ids = _ids(model, 33, 4)
    state = model.capture(ids)
    with torch.no_grad():
        cache = model.hf(ids, use_cache=True).cache_params
    for i in range(model.num_layers):
        layer = cache.layers[i]
        assert_close(f"ssm.{i}", state.ssm[i], layer.recurrent_states[0], RATIO)
        assert_close(f"conv.{i}", state.conv[i], layer.conv_states[0], RATIO)


def test_batch_rows_carry_different_states(model):
    demos_a, demos_b, query = _ids(model, 30, 5), _ids(model, 45, 6), _ids(model, 9, 7, batch=2)
    both = SkillState.cat([model.capture(demos_a), model.capture(demos_b)])
    batched, _ = model.forward(query, both)
    for row, demos in enumerate([demos_a, demos_b]):
        alone, _ = model.forward(torch.cat([demos, query[row : row + 1]], dim=1))
        assert_close(f"row {row}", batched[row], alone[0, demos.shape[1] :], RATIO)


def test_step_by_step_decoding_equals_parallel_forward(model):
    ids = _ids(model, 24, 8, batch=2)
    parallel, _ = model.forward(ids)
    state = model.capture(ids[:, :10])
    for t in range(10, 24):
        logits, state = model.step(ids[:, t], state)
        assert_close(f"token {t}", logits, parallel[:, t], RATIO)


def test_forward_does_not_modify_the_input_state(model):
    state = model.capture(_ids(model, 20, 9))
    before = state.clone()
    model.forward(_ids(model, 5, 10), state)
    model.step([4], state)
    for a, b in zip(state.tensors().values(), before.tensors().values()):
        assert torch.equal(a, b)


def test_generate_from_state_equals_generate_with_demos_in_prompt(model):
    demos, query = model.encode("ab ab ab ab ab"), model.encode(" ab")
    state = model.capture(demos)
    from_state = list(model.generate_ids(query, state, max_new_tokens=12))
    in_prompt = list(model.generate_ids(demos + query, max_new_tokens=12))
    assert from_state == in_prompt and len(from_state) > 0


def test_empty_state_is_the_start_of_text(model):
    ids = _ids(model, 12, 11)
    a, _ = model.forward(ids)
    b, _ = model.forward(ids, model.empty_state())
    assert torch.equal(a, b)


def test_bfloat16_model_keeps_float32_states(mamba_dir):
    from skillsoup import load_model

    m = load_model(mamba_dir, dtype=torch.bfloat16)
    state = m.capture([[5, 6, 7, 8]])
    assert all(t.dtype == torch.float32 for t in state.tensors().values())
    logits, _ = m.forward([[9, 10]], state)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_hf_cache_round_trip_and_token_by_token_continuation(model):
    """A state injected into transformers' cache continues exactly there, token by token."""
    from skillsoup.models.hf_cache import from_hf_cache, to_hf_cache

    ids = _ids(model, 30, 12)
    state = model.capture(ids[:, :24])
    cache = to_hf_cache(model, state)
    full, _ = model.forward(ids)
    with torch.no_grad():
        for t in range(24, 30):
            logits = model.hf(ids[:, t : t + 1], cache_params=cache, use_cache=True).logits[:, -1]
            assert_close(f"token {t}", logits, full[:, t], RATIO)
    back = from_hf_cache(model, cache, n_tokens=30)
    assert_close("ssm after", back.ssm[0], model.capture(ids).ssm[0], RATIO)


@pytest.mark.parametrize("lengths", [(7, 31, 1, 18), (40, 40)], ids=lambda v: "-".join(map(str, v)))
def test_capture_many_equals_capture_one_by_one(model, lengths, monkeypatch):
    """Prompts of different lengths from different states, read in one padded pass (what a batching
    server does when it admits requests): each row is the state capture gives alone."""
    starts = [model.capture(_ids(model, 5 + i, 20 + i)) for i in range(len(lengths))]
    prompts = [_ids(model, n, 30 + i)[0].tolist() for i, n in enumerate(lengths)]
    want = model.capture_many_ref(prompts, starts)
    with monkeypatch.context() as m:  # one pass, not capture after capture
        m.setattr(model, "capture", lambda *a: pytest.fail("capture_many read the prompts one by one"))
        got = model.capture_many(prompts, starts)
    assert got.n_tokens == want.n_tokens == [5 + i + n for i, n in enumerate(lengths)]
    for i in range(model.num_layers):
        assert_close(f"ssm.{i}", got.ssm[i], want.ssm[i], RATIO)
        assert_close(f"conv.{i}", got.conv[i], want.conv[i], RATIO)
    # the next token's logits agree too: the padding was never read
    token = torch.full((len(lengths),), 5)
    assert_close("next logits", model.step(token, got)[0], model.step(token, want)[0], RATIO)


def test_capture_many_of_a_hybrid_model_reads_one_by_one(hybrid_model):
    starts = [hybrid_model.neutral_state(), hybrid_model.capture([4, 5, 6])]
    got = hybrid_model.capture_many([[7, 8], [9, 10, 11, 12]], starts)
    assert got.batch_size == 2 and got.n_tokens == [2 + starts[0].n_tokens[0], 7]


@pytest.mark.parametrize("impl", ["auto", "ref"])
def test_stepping_in_place_equals_stepping_into_new_buffers(model, mamba_dir, mamba2_dir, impl):
    """StateModel.step_ (a batching server's decode) writes each token's state over the batch's own
    buffer; logits and states equal step's, token after token, and the state it started from is
    the one written (no copy)."""
    from skillsoup import load_model

    if impl == "ref":
        model = load_model(mamba_dir if model.arch == "mamba" else mamba2_dir, impl="ref")
    start = model.capture(_ids(model, 12, 4, batch=3))
    functional, in_place = start.clone(), start.clone()
    buffer = in_place.fixed.data_ptr()
    for token in range(5, 11):
        want, functional = model.step([token, token + 1, token + 2], functional)
        got, in_place = model.step_([token, token + 1, token + 2], in_place)
        assert torch.equal(got, want)
        assert torch.equal(in_place.fixed, functional.fixed) and in_place.n_tokens == functional.n_tokens
        assert in_place.fixed.data_ptr() == buffer
    assert torch.equal(start.fixed, model.capture(_ids(model, 12, 4, batch=3)).fixed)  # step never wrote over it


def test_stepping_in_place_falls_back_where_it_cannot(model):
    """A one-row state stepped as a batch (expanded), or a bfloat16 state: a new state, the given untouched."""
    state = model.capture(_ids(model, 8, 5))
    before = state.fixed.clone()
    logits, after = model.step_([3, 4], state)
    assert after is not state and after.batch_size == 2 and torch.equal(state.fixed, before)
    half = state.to(dtype=torch.bfloat16)
    _, stepped = model.step_([3], half)
    assert stepped is not half and torch.equal(half.fixed, before.to(torch.bfloat16))
