"""States of hybrid layouts (conv + recurrent + attention KV), without a model: batching pads
KV exactly, files round-trip, and mixing follows its KV policies."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import assert_close

from skillsoup import SkillState, mix, mix_ref
from skillsoup.errors import MixError, StateFileError, StateMismatchError
from skillsoup.states.layout import StateLayout

KINDS = ("recurrent", "attention", "none", "recurrent+attention", "attention")  # 2 recurrent, 3 attention


def make(n_kv=4, rows=1, seed=0, n_tokens=None):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    return SkillState([r(rows, 7, 3) for _ in range(2)], [r(rows, 2, 5, 3) for _ in range(2)],
                      [n_tokens or n_kv + 1] * rows, "f" * 64, "test-hybrid",
                      keys=[r(rows, 2, n_kv, 6) for _ in range(3)], values=[r(rows, 2, n_kv, 4) for _ in range(3)],
                      layer_kinds=KINDS)


def test_layout_counts_and_bytes():
    s = make(n_kv=4)
    assert s.layout.recurrent_layers == (0, 3) and s.layout.attention_layers == (1, 3, 4)
    assert s.fixed.numel() == 2 * (7 * 3 + 2 * 5 * 3)
    per_token = 3 * 2 * (6 + 4) * 4 + 8 + 4  # keys + values over 3 layers, float32, plus position and bias
    assert s.nbytes == s.layout.nbytes(n_kv_tokens=4) == s.fixed.numel() * 4 + 4 * per_token
    assert s.positions.tolist() == [[0, 1, 2, 3]] and s.kv_bias.abs().sum() == 0


def test_cat_pads_shorter_kv_and_rows_trims_it_again():
    a, b = make(n_kv=2, seed=1), make(n_kv=5, seed=2)
    both = SkillState.cat([a, b])
    assert both.n_kv_tokens == 5 and both.n_tokens == [3, 6]
    assert both.kv_bias[0].tolist() == [0, 0, -math.inf, -math.inf, -math.inf] and both.positions[0, 2:].eq(-1).all()
    back = both.rows([0])
    assert back.n_kv_tokens == 2 and torch.equal(back.keys, a.keys) and torch.equal(back.fixed, a.fixed)
    assert torch.equal(both.rows([1]).values, b.values)
    assert a.expand(3).keys.shape == (3, 3, 2, 2, 6) and torch.equal(a.expand(3).rows([2]).kv_bias, a.kv_bias)


def test_save_load_round_trips_kv_and_padding(tmp_path):
    both = SkillState.cat([make(n_kv=2, seed=1), make(n_kv=5, seed=2)])
    loaded = SkillState.load(both.save(tmp_path / "h.safetensors"))
    assert loaded.layout == both.layout and loaded.n_tokens == both.n_tokens
    for name, t in both.tensors().items():
        assert torch.equal(getattr(loaded, name), t), name
    empty = SkillState.from_flat(both.layout, torch.zeros(both.layout.fixed_numel(1)), [0], "f" * 64, "test-hybrid")
    assert SkillState.load(empty.save(tmp_path / "e.safetensors")).n_kv_tokens == 0  # no KV token yet


def test_bad_kv_is_rejected(tmp_path):
    s = make()
    s.kv_bias[0, 1] = float("nan")
    with pytest.raises(StateFileError, match="attention KV holds NaN"):
        SkillState.load(s.save(tmp_path / "nan.safetensors"))
    with pytest.raises(StateMismatchError, match="positions must lie"):
        SkillState.load(make(n_tokens=2).save(tmp_path / "pos.safetensors"))  # 4 KV tokens, only 2 read
    with pytest.raises(StateMismatchError, match="keys has shape"):
        SkillState.from_flat(s.layout, s.fixed, [5], "f" * 64, "x", kv={"keys": s.keys[:2], "values": s.values})
    with pytest.raises(StateMismatchError, match="different layouts"):
        SkillState.cat([s, SkillState(s.conv, s.ssm, [5], "f" * 64, "x")])


@pytest.mark.parametrize("kv", ["top", "concat"])
@pytest.mark.parametrize("conv", ["mix", "top"])
def test_mix_matches_reference(kv, conv):
    states = [make(n_kv=2 + i, seed=i) for i in range(3)]
    got, want = mix(states, [0.2, 0.5, 0.3], kv=kv, conv=conv), mix_ref(states, [0.2, 0.5, 0.3], kv=kv, conv=conv)
    assert_close("fixed", got.fixed, want.fixed, 1e-6)
    assert torch.equal(got.keys, want.keys) and torch.equal(got.values, want.values)
    assert torch.equal(got.positions, want.positions) and torch.allclose(got.kv_bias, want.kv_bias)
    assert got.n_tokens == want.n_tokens


def test_kv_policies():
    a, b = make(n_kv=2, seed=1), make(n_kv=5, seed=2)
    top = mix([a, b], [0.3, 0.7], kv="top")
    assert torch.equal(top.keys, b.keys) and top.n_tokens == b.n_tokens and top.meta["kv"] == "top"
    cat = mix([a, b], [0.3, 0.7], kv="concat")
    assert cat.n_kv_tokens == 7 and cat.n_tokens == [6]  # the longer state's next position
    assert torch.allclose(cat.kv_bias, torch.tensor([[math.log(0.3)] * 2 + [math.log(0.7)] * 5]))
    assert torch.equal(cat.keys, torch.cat([a.keys, b.keys], dim=3))
    one_hot = mix([a, b], [1.0, 0.0], kv="concat")  # zero weight: its KV is not read at all
    assert torch.equal(one_hot.keys, a.keys) and one_hot.kv_bias.abs().sum() == 0 and one_hot.n_tokens == a.n_tokens
    assert torch.equal(one_hot.fixed, a.fixed)
    with pytest.raises(MixError, match="positive weight"):
        mix([a, b], [-1.0, -0.5], kv="concat", normalize=False)
    with pytest.raises(MixError, match="kv policy"):
        mix([a, b], [0.5, 0.5], kv="mean")


def test_mixing_is_linear_on_the_recurrent_parts():
    a, b, c = (make(seed=i) for i in range(3))
    m = mix([a, b, c], [0.2, -0.5, 1.3], normalize=False)
    assert_close("linear", m.fixed, 0.2 * a.fixed - 0.5 * b.fixed + 1.3 * c.fixed, 1e-6)


def test_layout_validation():
    with pytest.raises(StateMismatchError, match="layer kinds"):
        StateLayout(("recurrent", "mamba"), (3, 4), (3, 5))
    with pytest.raises(StateMismatchError, match="kv shape"):
        StateLayout(("attention",), kv_shape=(2, 0, 4))
    assert StateLayout.from_dict(make().layout.to_dict()) == make().layout
