"""End to end: a tiny random Mamba / Mamba-2 run through StateModel with the reference ops and with
``skillsoup_kernels.model_ops`` swapped in gives the same logits and states from an injected state,
and those logits equal reading demonstrations + query in one pass."""

from __future__ import annotations

import inspect

import pytest
import torch

pytest.importorskip("triton", reason="the kernels need triton: pip install -e .[dev]")

import skillsoup_kernels  # noqa: E402
from kernel_cases import assert_close  # noqa: E402

from skillsoup.models import dispatch, step_ops  # noqa: E402
from skillsoup.models.base import StateModel  # noqa: E402

LOGIT_TOL = 1e-4  # float32 model, as the state engine's own exactness tests


def _tiny_model(arch: str, device) -> StateModel:
    """Smaller than tests/conftest.py's tiny_config (the interpreter scans one element at a time)."""
    from transformers import Mamba2Config, Mamba2ForCausalLM, MambaConfig, MambaForCausalLM

    torch.manual_seed(0)
    if arch == "mamba":
        config = MambaConfig(hidden_size=8, num_hidden_layers=2, state_size=4, conv_kernel=4, expand=2,
                             time_step_rank=2, vocab_size=50)
        hf = MambaForCausalLM(config)
    else:
        config = Mamba2Config(hidden_size=8, num_hidden_layers=2, state_size=4, conv_kernel=4, expand=2, head_dim=4,
                              num_heads=4, n_groups=2, vocab_size=50, chunk_size=8)
        hf = Mamba2ForCausalLM(config)
    with torch.no_grad():  # larger, varied dt so the decay of the injected state matters
        for layer in hf.backbone.layers:
            (layer.mixer.dt_proj.bias if arch == "mamba" else layer.mixer.dt_bias).uniform_(-3.0, 0.5)
    return StateModel(hf.to(device), fingerprint=f"tiny-{arch}", source="test", impl="ref")


def test_model_ops_has_the_reference_fields():
    assert set(vars(skillsoup_kernels.model_ops)) == set(vars(dispatch.REF_OPS)) | {"decode"}
    assert skillsoup_kernels.model_ops.name == "triton"
    assert dispatch._triton_ops()[0] is skillsoup_kernels.model_ops  # what dispatch hands to the backends


@pytest.mark.parametrize("op", [name for name in vars(dispatch.REF_OPS) if name != "name"]
                         + [f"decode.{name}" for name in vars(step_ops.DECODE_REF) if name != "name"])
def test_kernel_ops_accept_every_argument_of_the_reference(op):
    """Any call the backends make to ops.py's function is valid for the kernel, by name and default."""
    kernels, refs = ((skillsoup_kernels.model_ops.decode, step_ops.DECODE_REF) if op.startswith("decode.")
                     else (skillsoup_kernels.model_ops, dispatch.REF_OPS))
    op = op.removeprefix("decode.")
    kernel = inspect.signature(getattr(kernels, op)).parameters
    for name, param in inspect.signature(getattr(refs, op)).parameters.items():
        assert name in kernel, f"{op}: the kernel wrapper lacks parameter {name!r} of ops.{op}"
        assert kernel[name].default == param.default, f"{op}: default of {name!r} differs from ops.{op}"


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_kernels_continue_an_injected_state_like_the_reference(device, arch):
    model = _tiny_model(arch, device)
    demos = torch.randint(3, 50, (2, 11), device=device)  # two rows, two different skills
    query = torch.randint(3, 50, (2, 6), device=device)  # one 8-token tile of the scan
    state = model.capture(demos)  # reference ops
    logits_ref, after_ref = model.forward(query, state)
    full_ref, _ = model.forward(torch.cat([demos, query], dim=1))

    model._ops = skillsoup_kernels.model_ops  # swap the kernels in, as dispatch does on CUDA
    logits, after = model.forward(query, state)
    assert_close("logits vs ref ops", logits, logits_ref, LOGIT_TOL)
    assert_close("logits vs demos+query in the prompt", logits, full_ref[:, demos.shape[1]:], LOGIT_TOL)
    for i in range(model.num_layers):
        assert_close(f"conv state {i}", after.conv[i], after_ref.conv[i], LOGIT_TOL)
        assert_close(f"ssm state {i}", after.ssm[i], after_ref.ssm[i], LOGIT_TOL)

    token = logits[:, -1].argmax(-1)
    for _ in range(3):  # decode steps with the kernels vs with the reference ops
        step_logits, after = model.step(token, after)
        model._ops = dispatch.REF_OPS
        step_ref, after_ref = model.step(token, after_ref)
        model._ops = skillsoup_kernels.model_ops
        assert_close("decode logits", step_logits, step_ref, LOGIT_TOL)
        token = step_logits.argmax(-1)


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
def test_kernel_decode_step_in_place_follows_the_eager_step(device, arch):
    """StackBackend.step_into with the Triton decode ops (what the CUDA graphs capture) against
    StateModel.step with the reference ops, rows carrying different states."""
    model = _tiny_model(arch, device)
    state = model.capture(torch.randint(3, 50, (2, 9), device=device))
    static = state.clone()
    tokens = torch.tensor([4, 9], device=device)
    model._ops = skillsoup_kernels.model_ops
    backend = model.backend
    for _ in range(3):
        logits = backend.step_into(tokens, static)
        model._ops = dispatch.REF_OPS
        want, state = model.step(tokens, state)
        model._ops = skillsoup_kernels.model_ops
        assert_close("in-place decode logits", logits, want, LOGIT_TOL)
        assert_close("in-place decode state", static.fixed, state.fixed, LOGIT_TOL)
        tokens = want.argmax(-1)
