"""Decay mixing: composed chunk states equal one pass for one layer, mix_decay equals its
specification, the multi-layer gap is measured (not hidden), errors are typed, and layer ranges parse."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_close, build_checkpoint

from skillsoup import load_model, mix
from skillsoup.errors import MixError
from skillsoup.models.chunks import capture_chunks, chunk_ids, decay_gap
from skillsoup.states.decay import ChunkState, mix_decay, mix_decay_ref
from skillsoup.states.mixing import parse_layers

# lengths include chunks shorter than the conv window (k-1 = 3), so a boundary's conv inputs
# reach back over more than one chunk, and one longer than a scan chunk (64 tokens)
CHUNK_LENGTHS = {2: (9, 5), 3: (70, 1, 12), 4: (6, 2, 1, 11)}


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module", params=["mamba", "mamba2"])
def one_layer(request, tmp_path_factory):
    return load_model(build_checkpoint(tmp_path_factory.mktemp(f"{request.param}_1l"), request.param,
                                       seed=3, num_hidden_layers=1))


def _chunks(lengths, seed=0, vocab=97):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=g).tolist() for n in lengths]


def _states_close(got, want, ratio):
    for i in range(want.num_layers):
        assert_close(f"ssm.{i}", got.ssm[i], want.ssm[i], ratio)
        assert_close(f"conv.{i}", got.conv[i], want.conv[i], ratio)


# ---- one layer: exact ------------------------------------------------------------------------
@pytest.mark.parametrize("n_chunks", [2, 3, 4])
def test_one_layer_composition_equals_one_pass(one_layer, n_chunks):
    chunks = _chunks(CHUNK_LENGTHS[n_chunks], seed=n_chunks)
    composed = mix_decay(capture_chunks(one_layer, chunks))
    ids = chunk_ids(one_layer, chunks)
    one_pass = one_layer.capture(ids)
    _states_close(composed, one_pass, 1e-5)
    assert composed.n_tokens == one_pass.n_tokens == [sum(CHUNK_LENGTHS[n_chunks])]
    probe = [7, 8, 9]
    got = one_layer.forward(probe, composed, logits="last")[0]
    want = one_layer.forward(torch.cat([ids, torch.tensor([probe])], dim=1), logits="last")[0]
    assert_close("next-token logits", got, want, 1e-5)


def test_one_layer_composition_from_a_start_state(one_layer):
    start = one_layer.capture([[1, 40, 41, 42, 43]])
    chunks = _chunks((4, 7, 3), seed=11)
    composed = mix_decay(capture_chunks(one_layer, chunks, start=start))
    _states_close(composed, one_layer.capture(chunk_ids(one_layer, chunks), start), 1e-5)


def test_without_the_conv_context_composition_is_not_exact(one_layer):
    # the conv window crossing chunk boundaries is what makes "previous" exact
    chunks = _chunks((9, 5, 6), seed=5)
    one_pass = one_layer.capture(chunk_ids(one_layer, chunks))
    independent = mix_decay(capture_chunks(one_layer, chunks, context="none"))
    err = (independent.ssm[0] - one_pass.ssm[0]).norm() / one_pass.ssm[0].norm()
    assert err > 1e-3


def test_log_decay_carries_a_start_state_through_the_chunk(model):
    """capture(ids, S) - capture(ids, S without ssm) = exp(log_decay) * S.ssm in the last layer
    (its inputs do not depend on its own SSM state)."""
    ids = [[5, 9, 30, 31, 12, 60, 2, 70]]
    start = model.capture([[4, 20, 21, 22]])
    no_ssm = start.clone()
    no_ssm.ssm[-1].zero_()  # a view of the flat buffer: zeroes the last layer's SSM state only
    full, log_decay = model.capture_with_decay(ids, start)
    base = model.capture(ids, no_ssm)
    assert_close("carried", full.ssm[-1] - base.ssm[-1], torch.exp(log_decay[-1]) * start.ssm[-1], 1e-5)
    assert all((ld <= 0).all() and ld.dtype == torch.float32 for ld in log_decay)
    _states_close(full, model.capture(ids, start), 0.0)  # the hook does not change the forward


# ---- fast path vs specification -----------------------------------------------------------
@pytest.mark.parametrize("weights", [None, [0.5, 2.0, -1.0, 1.0]])
def test_mix_decay_matches_reference(model, weights):
    chunks = capture_chunks(model, _chunks((8, 3, 20, 5), seed=1))
    got, want = mix_decay(chunks, weights), mix_decay_ref(chunks, weights)
    _states_close(got, want, 1e-6)
    assert got.meta["mix"] == want.meta["mix"] == "decay"
    assert got.n_tokens == want.n_tokens == [36]


def test_one_chunk_is_its_own_state_and_weights_scale(model):
    chunks = capture_chunks(model, _chunks((6, 4), seed=2))
    _states_close(mix_decay(chunks[:1]), chunks[0].state, 0.0)
    zero_first = mix_decay(chunks, [0.0, 1.0])
    _states_close(zero_first, chunks[1].state, 0.0)


# ---- the multi-layer gap, measured -------------------------------------------------------
def test_multi_layer_gap_is_measured(model, record_property):
    gap = decay_gap(model, _chunks((12, 7, 9), seed=4), probe=[10, 11, 12])
    record_property("decay_gap", repr(gap))
    print(f"{model.arch} {model.num_layers} layers: {gap}")
    assert all(math.isfinite(e) for e in gap.ssm_rel_error + gap.conv_rel_error + [gap.max_logit_diff])
    assert gap.ssm_rel_error[0] < 1e-5  # layer 0 reads tokens only: exact even in a deep model
    assert gap.ssm_rel_error[-1] > 1e-6  # deeper layers saw one chunk, not the history
    assert gap.max_logit_diff > 0


def test_demo_model_gap_on_a_demo_skill(record_property):
    from skillsoup.demo import DEMO_MODEL_DIR, corpus

    model = load_model(DEMO_MODEL_DIR)
    skill = corpus.skill_object(corpus.SKILLS[0].name, n_demos=4)
    chunks = [skill.render_demonstration(d) for d in skill.demonstrations]
    probe = skill.render_query(skill.tests[0].input)
    gap = decay_gap(model, chunks, probe, start=model.neutral_state())
    record_property("demo_decay_gap", repr(gap))
    print(f"demo model, skill {skill.name}: {gap}")
    assert len(gap.ssm_rel_error) == model.num_layers
    assert gap.ssm_rel_error[0] < 1e-4
    assert all(math.isfinite(e) for e in gap.ssm_rel_error + [gap.max_logit_diff])


# ---- typed errors ----------------------------------------------------------------------------
def test_mix_decay_errors_are_typed(model, one_layer):
    chunks = capture_chunks(model, _chunks((5, 4), seed=6))
    with pytest.raises(MixError, match="at least one chunk"):
        mix_decay([])
    with pytest.raises(MixError, match="not a ChunkState"):
        mix_decay([chunks[0].state])
    with pytest.raises(MixError, match="one weight per state"):
        mix_decay(chunks, [1.0])
    with pytest.raises(MixError, match="cannot be composed"):
        mix_decay([chunks[0], capture_chunks(one_layer, [[5, 6]])[0]])
    bad_ssm = ChunkState(chunks[1].state.clone(), list(chunks[1].log_decay))
    bad_ssm.state.ssm[0][0].view(-1)[0] = float("nan")
    bad_decay = ChunkState(chunks[1].state, [ld.clone() for ld in chunks[1].log_decay])
    bad_decay.log_decay[-1].view(-1)[0] = float("inf")
    growing = ChunkState(chunks[1].state, [ld.abs() + 1 for ld in chunks[1].log_decay])
    wrong_shape = ChunkState(chunks[1].state, [torch.cat([ld, ld], dim=1) for ld in chunks[1].log_decay])
    for fn in (mix_decay, mix_decay_ref):
        for chunk, message in ((bad_ssm, "NaN or infinite"), (bad_decay, "NaN or infinite"),
                               (growing, "positive log-decay"), (wrong_shape, "log-decay shape")):
            with pytest.raises(MixError, match=message):
                fn([chunks[0], chunk])
    with pytest.raises(MixError, match="log-decay tensors"):
        ChunkState(chunks[0].state, chunks[0].log_decay[:-1])


def test_capture_chunks_errors_are_typed(model):
    with pytest.raises(MixError, match="non-empty list"):
        capture_chunks(model, [])
    with pytest.raises(MixError, match="chunk 1 holds no tokens"):
        capture_chunks(model, [[5, 6], []])
    with pytest.raises(MixError, match="context must be one of"):
        capture_chunks(model, [[5, 6]], context="conv")


# ---- layer ranges ----------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("all", None), (" ALL ", None), ("0-3,6", [0, 1, 2, 3, 6]), ("6, 0-1,1", [0, 1, 6]), ("2", [2]),
    ("0 - 2", [0, 1, 2]), ("3-3", [3]),
])
def test_parse_layers(text, expected):
    assert parse_layers(text) == expected


@pytest.mark.parametrize("text, message", [
    ("", "cannot read layers"), ("a", "cannot read layers"), ("1-", "cannot read layers"),
    ("-1", "cannot read layers"), ("1,,2", "cannot read layers"), ("1-2-3", "cannot read layers"),
    ("\u0662", "cannot read layers"), ("3-1", "runs backwards"), ("0-4", "model has layers 0..3"),
])
def test_parse_layers_rejects_bad_text(text, message):
    with pytest.raises(MixError, match=message):
        parse_layers(text, num_layers=4)


def test_parsed_layers_drive_mix(model):
    states = [model.capture([[4 + i, 10, 30 + i]]) for i in range(2)]
    m = mix(states, [0.25, 0.75], layers=parse_layers("1", model.num_layers))
    assert torch.equal(m.ssm[0], states[1].ssm[0])  # unmixed layer: whole from the top state
    assert_close("mixed", m.ssm[1], 0.25 * states[0].ssm[1] + 0.75 * states[1].ssm[1], 1e-6)


def test_bench_decay_mixing_runs_on_one_skill(capsys):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import bench_decay_mixing

    results = bench_decay_mixing.main(["--skills", "1", "--demos", "3", "--probes", "1"])
    assert "| decay |" in capsys.readouterr().out
    assert results["decay"][0][0] < 1e-4 < results["decay-none"][0][0]  # layer 0: exact only with the conv context
