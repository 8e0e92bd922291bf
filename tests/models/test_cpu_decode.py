"""The whole-stack CPU decode step (skillsoup/models/cpu_decode.py) equals the module-by-module step
(``StackBackend.step_ref``), follows the weights when they change, and steps aside where it does
not apply; its add + RMSNorm kernel equals the PyTorch twin."""

from __future__ import annotations

import threading

import pytest
import torch
from helpers import assert_close, tiny_config

from skillsoup.models import cpu_ops
from skillsoup.models.base import StateModel
from skillsoup.states.state import SkillState

RATIO = 2e-5

pytestmark = pytest.mark.skipif(not cpu_ops.available()[0], reason="the C kernels do not build here")


@pytest.mark.parametrize("b,c", [(1, 1), (1, 7), (3, 16), (5, 33), (37, 131)], ids=lambda v: str(v))
@pytest.mark.parametrize("with_out", [True, False], ids=["add", "first-layer"])
def test_add_rms_norm_equals_reference(b, c, with_out):
    g = torch.Generator().manual_seed(b * 1000 + c)
    residual, out = torch.randn(b, c, generator=g) * 3, torch.randn(b, c, generator=g)
    weight = torch.randn(c, generator=g)
    got_res, want_res = residual.clone(), residual.clone()
    got, want = torch.full((b, c), float("nan")), torch.full((b, c), float("nan"))
    cpu_ops.add_rms_norm_(got_res, out if with_out else None, weight, 1e-5, got)
    cpu_ops.add_rms_norm_ref(want_res, out if with_out else None, weight, 1e-5, want)
    assert torch.equal(got_res, want_res)  # one float add per element: exact
    assert_close("normed", got, want, RATIO)
    if not with_out:
        assert torch.equal(got_res, residual)


def test_add_rms_norm_refuses_what_the_kernel_cannot_read():
    x = torch.randn(2, 8)
    with pytest.raises(ValueError, match="float32"):
        cpu_ops.add_rms_norm_(x.double(), None, torch.ones(8), 1e-5, torch.empty(2, 8))
    with pytest.raises(ValueError, match="shapes"):
        cpu_ops.add_rms_norm_(x, torch.randn(2, 7), torch.ones(8), 1e-5, torch.empty(2, 8))


def _model(arch: str, residual_in_fp32: bool = True, seed: int = 0, **overrides) -> StateModel:
    """A random model with channel counts off the kernels' vector widths (Mamba-2: 10 heads of 8)."""
    from transformers import Mamba2ForCausalLM, MambaForCausalLM

    from skillsoup.models.loading import model_fingerprint

    torch.manual_seed(seed)
    options = dict(hidden_size=40, state_size=6, num_hidden_layers=3, residual_in_fp32=residual_in_fp32,
                   **({} if arch == "mamba" else {"num_heads": 10, "n_groups": 2}))
    cfg = tiny_config(arch, **{**options, **overrides})
    hf = (MambaForCausalLM if arch == "mamba" else Mamba2ForCausalLM)(cfg).eval()
    with torch.no_grad():  # varied dt, so decay matters
        for layer in hf.backbone.layers:
            (layer.mixer.dt_proj.bias if arch == "mamba" else layer.mixer.dt_bias).uniform_(-3.0, 0.5)
    return StateModel(hf, None, fingerprint=model_fingerprint(hf), impl="cpu")


def _start(model, rows: int) -> SkillState:
    g = torch.Generator().manual_seed(rows)
    return SkillState.cat([model.capture(torch.randint(3, 97, (1, 4 + 3 * r), generator=g)) for r in range(rows)])


def _step_both(model, state, tokens):
    """(logits, state) of the plan and of the module-by-module step from the same state."""
    ids = torch.as_tensor(tokens)
    with torch.no_grad():
        got = model.step(ids, state)
        want = model.backend.step_ref(ids, state)
    return got, want


def _assert_same_step(got, want):
    assert_close("logits", got[0], want[0], RATIO)
    assert_close("state", got[1].fixed, want[1].fixed, RATIO)
    assert got[1].n_tokens == want[1].n_tokens


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
@pytest.mark.parametrize("residual_in_fp32", [True, False], ids=["fp32-residual", "model-dtype-residual"])
@pytest.mark.parametrize("rows", [1, 5])
def test_plan_step_equals_module_by_module_step(arch, residual_in_fp32, rows):
    model = _model(arch, residual_in_fp32)
    state = _start(model, rows)
    own = state.clone()
    buffer = own.fixed.data_ptr()
    for t in range(6):
        tokens = [5 + t + r for r in range(rows)]
        got, want = _step_both(model, state, tokens)
        assert model.backend._plan[1] is not None, "the decode plan must cover this model"
        _assert_same_step(got, (want[0], want[1]))
        in_place, own = model.step_(tokens, own)  # in place: bitwise what step gives
        assert torch.equal(in_place, got[0]) and torch.equal(own.fixed, got[1].fixed)
        assert own.fixed.data_ptr() == buffer and own.n_tokens == got[1].n_tokens
        state = got[1]  # both continue from the plan's state: each step is compared on its own
    assert state.n_tokens == [n + 6 for n in _start(model, rows).n_tokens]


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_plan_follows_the_weights_when_they_change(arch):
    model = _model(arch)
    state = _start(model, 2)
    _step_both(model, state, [3, 4])
    first = model.backend._plan[1]
    mixer = model.hf.backbone.layers[1].mixer
    with torch.no_grad():
        mixer.A_log.add_(0.5)  # in place: the cached decay rates must follow
        got, want = _step_both(model, state, [3, 4])
        _assert_same_step(got, want)
        assert model.backend._plan[1] is not first
        mixer.out_proj.weight = torch.nn.Parameter(torch.randn_like(mixer.out_proj.weight))  # replaced
        _assert_same_step(*_step_both(model, state, [3, 4]))
        mixer.conv1d.weight.data = torch.randn_like(mixer.conv1d.weight)  # re-pointed
        _assert_same_step(*_step_both(model, state, [3, 4]))
        model.hf.backbone.norm_f.weight.mul_(2.0)  # in place, read through its pointer
        _assert_same_step(*_step_both(model, state, [3, 4]))


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_plan_steps_aside_where_it_does_not_apply(arch):
    model = _model(arch)
    state = _start(model, 2)
    with torch.no_grad():
        model.hf.to(torch.bfloat16)  # weights the kernels cannot read: the module path, still right
        logits, after = model.step([3, 4], state)
    assert model.backend._plan[:2] == (model.backend.ops, None)
    assert logits.dtype == torch.float32 and after.n_tokens == [n + 1 for n in state.n_tokens]
    with torch.no_grad():
        model.hf.to(torch.float32)  # converted back: the plan again
        _assert_same_step(*_step_both(model, state, [3, 4]))
    assert model.backend._plan[1] is not None
    with torch.no_grad():
        mixer = model.hf.backbone.layers[0].mixer
        norms = ("dt_layernorm", "b_layernorm", "c_layernorm")  # FalconMamba's on dt, B, C: not the kernels'
        for name in norms:
            setattr(mixer, name, torch.nn.Identity())
        model.backend._plan = (None, None, None)
        model.step([3, 4], state)
        assert model.backend._plan[1] is None
        for name in norms:
            delattr(mixer, name)
    model.backend._plan = (None, None, None)
    with torch.enable_grad():  # autograd on: the module path, which records the graph
        logits, _ = model.backend.step(torch.tensor([3, 4]), state)
    assert logits.requires_grad and model.backend._plan == (None, None, None)


def test_threads_stepping_one_model_keep_their_own_buffers():
    model = _model("mamba")
    starts = [_start(model, rows) for rows in (1, 3)]
    want = []
    for start in starts:
        state = start.clone()
        for t in range(20):
            logits, state = model.step_([5 + t] * start.batch_size, state)
        want.append((logits, state.fixed))
    got: list = [None, None]

    def decode(i):
        state = starts[i].clone()
        for t in range(20):
            logits, state = model.step_([5 + t] * starts[i].batch_size, state)
        got[i] = (logits, state.fixed)

    workers = [threading.Thread(target=decode, args=(i,)) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for (logits, fixed), (want_logits, want_fixed) in zip(got, want):
        assert torch.equal(logits, want_logits) and torch.equal(fixed, want_fixed)


def test_mixer_step_follows_dt_proj_changes():
    """cpu_steps.mamba1_step caches dt_proj's weight transposed: an in-place change must reach it."""
    from skillsoup.models import cpu_steps

    model = _model("mamba")
    mixer = model.hf.backbone.layers[0].mixer
    g = torch.Generator().manual_seed(3)
    hidden, conv = torch.randn(2, 40, generator=g), torch.randn(2, mixer.intermediate_size, 4, generator=g)
    ssm = torch.randn(2, mixer.intermediate_size, 6, generator=g)
    with torch.no_grad():
        for _ in range(2):
            out, _, s = cpu_steps.mamba1_step(mixer, hidden, conv, ssm)
            out_ref, _, s_ref = cpu_steps.mamba1_step_ref(mixer, hidden, conv, ssm)
            assert_close("out", out, out_ref, RATIO)
            assert_close("ssm", s, s_ref, RATIO)
            mixer.dt_proj.weight.mul_(-3.0)


def test_a_state_of_another_shape_is_refused_not_read():
    """The kernels read raw pointers: a state whose layout does not fit never reaches them."""
    from skillsoup.errors import GenerationError

    model, other = _model("mamba"), _model("mamba", num_hidden_layers=2)
    state = other.capture([3, 4, 5])
    with torch.no_grad(), pytest.raises(GenerationError, match="layers"):
        model.backend.step_(torch.tensor([3]), state)
    wider = _model("mamba", state_size=8).capture([3, 4, 5])  # same layer count, other SSM shape
    assert not model.backend._plan[1].fits(wider.layout)


def test_buffers_made_under_inference_mode_serve_outside_it():
    model = _model("mamba2")
    state = _start(model, 2)
    with torch.inference_mode():
        first, _ = model.step([3, 4], state)
    with torch.no_grad():
        again, _ = model.step([3, 4], state)  # the same thread's buffers, now outside inference mode
    assert torch.equal(first, again)
