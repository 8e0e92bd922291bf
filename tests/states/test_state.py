"""SkillState files: round trip, and every way a file can be wrong gives a typed, clear error."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import assert_close, build_checkpoint

from skillsoup import SkillState, load_model
from skillsoup.errors import StateFileError, StateMismatchError


@pytest.fixture(scope="module")
def other_model(tmp_path_factory):
    return load_model(build_checkpoint(tmp_path_factory.mktemp("other"), "mamba", seed=1))


def test_save_load_inject_gives_same_logits(model, tmp_path):
    demos, query = [[5, 9, 13, 40, 41, 42]], [[7, 8, 9]]
    state = model.capture(demos)
    path = state.save(tmp_path / "s.safetensors")
    assert path.read_bytes()[8:9] == b"{"  # safetensors header, never pickle
    loaded = SkillState.load(path, model=model)
    assert loaded.n_tokens == [6] and loaded.fingerprint == model.fingerprint
    a, _ = model.forward(query, state)
    b, _ = model.forward(query, loaded)
    assert torch.equal(a, b)


def test_state_from_another_model_is_rejected(mamba_dir, other_model, tmp_path):
    model = load_model(mamba_dir)
    assert model.fingerprint != other_model.fingerprint
    path = other_model.capture([[4, 5, 6]]).save(tmp_path / "foreign.safetensors")
    with pytest.raises(StateMismatchError, match="another model"):
        SkillState.load(path, model=model)
    with pytest.raises(StateMismatchError, match="another model"):
        model.forward([[4]], other_model.capture([[4, 5]]))


def test_fingerprint_is_stable_across_loads(mamba_dir):
    assert load_model(mamba_dir).fingerprint == load_model(mamba_dir).fingerprint


def test_fingerprint_does_not_depend_on_the_thread_count():
    """A float sum of the weights changed with torch's thread count (the reduction order), so a
    registry filled with one thread count recaptured every state under another."""
    import torch

    from skillsoup.demo import DEMO_MODEL_DIR

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = load_model(DEMO_MODEL_DIR).fingerprint
        torch.set_num_threads(2)
        two = load_model(DEMO_MODEL_DIR).fingerprint
    finally:
        torch.set_num_threads(threads)
    assert one == two


def test_truncated_file_is_rejected(model, tmp_path):
    path = model.capture([[4, 5, 6]]).save(tmp_path / "s.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StateFileError, match="truncated"):
        SkillState.load(path)


def test_nan_values_are_rejected(model, tmp_path):
    state = model.capture([[4, 5, 6]])
    state.ssm[1][0, 0] = float("nan")
    path = state.save(tmp_path / "nan.safetensors")
    with pytest.raises(StateFileError, match="ssm.1 holds NaN"):
        SkillState.load(path)


def test_wrong_layer_count_and_shape_are_rejected(model, tmp_path):
    state = model.capture([[4, 5, 6]])
    short = SkillState(state.conv[:1], state.ssm[:1], state.n_tokens, state.fingerprint, state.arch)
    with pytest.raises(StateMismatchError, match="layers"):
        SkillState.load(short.save(tmp_path / "short.safetensors"), model=model)
    bad = state.clone()
    bad.ssm[1] = bad.ssm[1][..., :-1].contiguous()
    with pytest.raises(StateMismatchError, match="ssm.1 has shape"):
        SkillState.load(bad.save(tmp_path / "bad.safetensors"))


def test_not_a_state_file_and_missing_file(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + json.dumps({"a": 1}).encode()[:16])
    with pytest.raises(StateFileError):
        SkillState.load(junk)
    with pytest.raises(StateFileError, match="does not exist"):
        SkillState.load(tmp_path / "nope.safetensors")


def test_rows_expand_and_cat(model):
    a, b = model.capture([[4, 5]]), model.capture([[6, 7, 8]])
    both = SkillState.cat([a, b])
    assert both.batch_size == 2 and both.n_tokens == [2, 3]
    assert_close("row 1", both.rows([1]).ssm[0], b.ssm[0], 0)
    assert a.expand(3).batch_size == 3
