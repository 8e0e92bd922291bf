"""mix equals its specification mix_ref, and has the algebra a mixture must have."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close

from skillsoup import mix, mix_ref
from skillsoup.errors import MixError, StateMismatchError


@pytest.fixture
def states(model):
    return [model.capture([[4 + i, 10 + 2 * i, 30 + i, 50]]) for i in range(4)]


def _close(a, b, ratio=1e-6):
    for name, (x, y) in zip(a.tensors(), zip(a.tensors().values(), b.tensors().values())):
        assert_close(name, x, y, ratio)


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("conv", ["mix", "top"])
def test_mix_matches_reference(states, k, conv):
    weights = [0.5, 2.0, 1.25, 0.25][:k]
    _close(mix(states[:k], weights, conv=conv), mix_ref(states[:k], weights, conv=conv))


def test_mix_with_itself_and_one_hot_returns_it(states):
    _close(mix([states[0], states[0]], [0.3, 0.7]), states[0])
    _close(mix(states[:3], [0, 1, 0]), states[1])


def test_mix_is_linear(states):
    a, b = states[0], states[1]
    m = mix([a, b], [0.25, 0.75])
    for i in range(a.num_layers):
        assert_close("ssm", m.ssm[i], 0.25 * a.ssm[i] + 0.75 * b.ssm[i], 1e-6)
    # mixing mixtures = mixing with multiplied-out weights
    _close(mix([mix([a, b], [1, 1]), states[2]], [0.5, 0.5]), mix([a, b, states[2]], [0.25, 0.25, 0.5]))


def test_weights_are_normalised_unless_asked(states):
    m = mix(states[:2], [2, 2])
    _close(m, mix(states[:2], [0.5, 0.5]))
    raw = mix(states[:2], [2, 2], normalize=False)
    assert_close("unnormalised", raw.ssm[0], 2 * states[0].ssm[0] + 2 * states[1].ssm[0], 1e-6)


def test_conv_top_takes_the_highest_weighted_conv_state(states):
    m = mix(states[:3], [0.2, 0.5, 0.3], conv="top")
    assert torch.equal(m.conv[0], states[1].conv[0])


def test_task_arithmetic_relative_to_neutral(model, states):
    base = model.neutral_state()
    m = mix(states[:2], [1.0, -0.5], normalize=False, base=base)
    expected = base.ssm[0] + 1.0 * (states[0].ssm[0] - base.ssm[0]) - 0.5 * (states[1].ssm[0] - base.ssm[0])
    assert_close("task arithmetic", m.ssm[0], expected, 1e-6)
    _close(m, mix_ref(states[:2], [1.0, -0.5], normalize=False, base=base))


def test_layer_subset_mixes_only_those_layers(states):
    m = mix(states[:2], [0.4, 0.6], layers=[1])
    assert torch.equal(m.ssm[0], states[1].ssm[0])
    assert_close("layer 1", m.ssm[1], 0.4 * states[0].ssm[1] + 0.6 * states[1].ssm[1], 1e-6)
    _close(m, mix_ref(states[:2], [0.4, 0.6], layers=[1]))


@pytest.mark.parametrize("weights,message", [
    ([1.0], "2 states but 1 weights"),
    ([float("nan"), 1.0], "finite"),
    ([1.0, -1.0], "nonzero sum"),
])
def test_bad_weights_are_rejected(states, weights, message):
    with pytest.raises(MixError, match=message):
        mix(states[:2], weights)


def test_bad_options_are_rejected(states):
    with pytest.raises(MixError, match="conv policy"):
        mix(states[:2], [1, 1], conv="avg")
    with pytest.raises(MixError, match="layers"):
        mix(states[:2], [1, 1], layers=[99])
    with pytest.raises(MixError, match="at least one"):
        mix([], [])


def test_states_of_different_models_do_not_mix(mamba_dir, mamba2_dir):
    from skillsoup import load_model

    a = load_model(mamba_dir).capture([[4, 5]])
    b = load_model(mamba2_dir).capture([[4, 5]])
    with pytest.raises(StateMismatchError, match="different models"):
        mix([a, b], [1, 1])


@pytest.mark.parametrize("options", [dict(), dict(conv="top"), dict(layers=[1]), dict(base="neutral")],
                         ids=["mix", "conv-top", "layer-1", "task-arithmetic"])
def test_mix_into_a_preallocated_state_equals_mix_ref(model, states, options):
    if options.get("base"):
        options = dict(base=model.neutral_state(), normalize=False)
    out = model.empty_state()
    out.fixed.fill_(float("nan"))  # every element must be written
    buffer = out.fixed.data_ptr()
    got = mix(states[:3], [0.5, -0.25, 0.75], out=out, **options)
    assert got is out and out.fixed.data_ptr() == buffer  # written in place, no new buffer
    _close(got, mix_ref(states[:3], [0.5, -0.25, 0.75], **options))
    again = mix_ref(states[:3], [0.5, -0.25, 0.75], out=model.empty_state(), **options)
    _close(again, got)


def test_mix_into_rejects_an_unfit_or_aliased_out(model, states):
    with pytest.raises(MixError, match="separate state"):
        mix(states[:2], [0.5, 0.5], out=states[0])
    with pytest.raises(MixError, match="2 rows"):
        mix([s.expand(2) for s in states[:2]], [0.5, 0.5], out=model.empty_state())
    with pytest.raises(MixError, match="SkillState"):
        mix(states[:2], [0.5, 0.5], out=torch.zeros(3))


def test_mix_rows_is_one_product_over_a_bank(states):
    from skillsoup.states.mixing import mix_rows

    bank = torch.stack([s.fixed for s in states])  # [K, N]: K states' flat buffers side by side
    out = torch.empty_like(states[0].fixed)
    assert mix_rows(bank, [0.1, 0.2, 0.3, 0.4], out=out) is out
    assert_close("bank mix", out, mix(states, [0.1, 0.2, 0.3, 0.4], normalize=False).fixed, 1e-6)
