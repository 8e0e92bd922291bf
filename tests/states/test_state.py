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
    state.ssm[1][0, 0] = float("nan")  # a view: writes into the flat buffer
    path = state.save(tmp_path / "nan.safetensors")
    with pytest.raises(StateFileError, match=r"recurrent state of layer 1 \(ssm.1\) holds NaN") as caught:
        SkillState.load(path)
    _advised_once(caught.value)


def _advised_once(exc: StateFileError) -> None:
    """The message gives the fix once; ``problem`` (for a caller that recomputes) gives none."""
    assert str(exc).count("skills rebuild") == 1 and str(exc).startswith(exc.problem)
    assert "rebuild" not in exc.problem and "recompute" not in exc.problem


def test_wrong_layer_count_and_shape_are_rejected(model, tmp_path):
    state = model.capture([[4, 5, 6]])
    short = SkillState(state.conv[:1], state.ssm[:1], state.n_tokens, state.fingerprint, state.arch)
    with pytest.raises(StateMismatchError, match="layers"):
        SkillState.load(short.save(tmp_path / "short.safetensors"), model=model)
    with pytest.raises(StateMismatchError, match="ssm.1 has shape"):  # a flat buffer needs one shape per kind
        SkillState(state.conv, [state.ssm[0], state.ssm[1][..., :-1]], state.n_tokens, state.fingerprint, state.arch)
    path = state.save(tmp_path / "bad.safetensors")
    tensors, meta = _read_raw(path)
    tensors["fixed"] = tensors["fixed"][:-1].clone()
    _write_raw(path, tensors, meta)
    with pytest.raises(StateFileError, match="flat state buffer has shape.*skills rebuild"):
        SkillState.load(path)


def _read_raw(path):
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _write_raw(path, tensors, meta):
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=meta)


def _write_format_1(state, path):
    """A state file as skillsoup wrote them before hybrid models: conv.{i} / ssm.{i} per layer."""
    tensors = {f"conv.{i}": t.contiguous() for i, t in enumerate(state.conv)}
    tensors.update({f"ssm.{i}": t.contiguous() for i, t in enumerate(state.ssm)})
    meta = {"format": "skillsoup-state/1", "arch": state.arch, "fingerprint": state.fingerprint,
            "num_layers": str(state.num_layers), "n_tokens": json.dumps(state.n_tokens), "dtype": "float32",
            "meta": json.dumps({"origin": "v1"})}
    _write_raw(path, tensors, meta)


def test_format_1_files_still_load_and_continue_the_same(model, tmp_path):
    state = model.capture([[5, 9, 13, 40], [7, 8, 9, 10]])
    _write_format_1(state, tmp_path / "v1.safetensors")
    old = SkillState.load(tmp_path / "v1.safetensors", model=model)
    assert old.layout == state.layout and old.meta == {"origin": "v1"} and old.n_tokens == [4, 4]
    assert torch.equal(old.fixed, state.fixed)  # the per-layer tensors land in the flat layout
    assert torch.equal(model.forward([[1, 2], [3, 4]], old)[0], model.forward([[1, 2], [3, 4]], state)[0])
    again = SkillState.load(old.save(tmp_path / "v2.safetensors"))  # rewritten in the current format
    assert _read_raw(tmp_path / "v2.safetensors")[1]["format"] == "skillsoup-state/2"
    assert torch.equal(again.fixed, state.fixed)


@pytest.mark.parametrize("change, match", [
    (dict(format="skillsoup-state/3"), "has format 'skillsoup-state/3'.*skillsoup skills rebuild"),
    (dict(format="skillsoup-state/1", arch="rwkv"), "unknown architecture 'rwkv'.*skillsoup skills rebuild"),
    (dict(format="skillsoup-state/1", num_layers="3"), "holds 4 tensors, expected 6.*skillsoup skills rebuild"),
], ids=["future-format", "format-1-unknown-arch", "format-1-missing-layer"])
def test_unreadable_old_or_future_files_name_rebuild(model, tmp_path, change, match):
    path = tmp_path / "old.safetensors"
    _write_format_1(model.capture([[4, 5, 6]]), path)
    tensors, meta = _read_raw(path)
    _write_raw(path, tensors, {**meta, **change})
    with pytest.raises(StateFileError, match=match) as caught:
        SkillState.load(path)
    _advised_once(caught.value)


def test_flat_layout_views_and_round_trip(model, tmp_path):
    state = model.capture([[4, 5, 6], [7, 8, 9]])
    start, end = state.fixed.data_ptr(), state.fixed.data_ptr() + state.fixed.numel() * 4
    assert all(start <= t.data_ptr() < end and t.is_contiguous() for t in state.conv + state.ssm)  # views
    assert state.section("conv").shape == (model.num_layers, 2, *model.state_shapes()[0])
    loaded = SkillState.load(state.save(tmp_path / "flat.safetensors"), model=model)
    assert _read_raw(tmp_path / "flat.safetensors")[0].keys() == {"fixed"}  # one flat tensor on disk
    assert torch.equal(loaded.fixed, state.fixed) and loaded.layout == state.layout
    assert state.nbytes == state.fixed.numel() * 4 == model.state_nbytes() * 2


def test_not_a_state_file_and_missing_file(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00" + json.dumps({"a": 1}).encode()[:16])
    with pytest.raises(StateFileError) as caught:
        SkillState.load(junk)
    _advised_once(caught.value)
    with pytest.raises(StateFileError, match="does not exist") as caught:
        SkillState.load(tmp_path / "nope.safetensors")
    _advised_once(caught.value)


def test_rows_expand_and_cat(model):
    a, b = model.capture([[4, 5]]), model.capture([[6, 7, 8]])
    both = SkillState.cat([a, b])
    assert both.batch_size == 2 and both.n_tokens == [2, 3]
    assert_close("row 1", both.rows([1]).ssm[0], b.ssm[0], 0)
    assert a.expand(3).batch_size == 3
