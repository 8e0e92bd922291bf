"""kernels/mix.py: the fused weighted sum against its reference, and mix_skill_states against both
its reference and skillsoup.states.mixing.mix_ref (the spec of the path it accelerates)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="the kernels need triton: pip install -e .[dev]")

import skillsoup_kernels  # noqa: E402
from kernel_cases import DTYPE_IDS, TOL, assert_close, randn, strided  # noqa: E402
from skillsoup_kernels import mix as mix_module  # noqa: E402

from skillsoup.states.mixing import mix_ref  # noqa: E402
from skillsoup.states.state import SkillState  # noqa: E402

WEIGHTS = [0.7, -0.25, 1.5, 0.05, -1.0, 0.3, 2.0, -0.6]  # negative and > 1 on purpose

MIX_CASES = [
    pytest.param(1, (2, 37, 5), id="K1-odd-2x37x5"),
    pytest.param(3, (1, 3, 5, 7), id="K3-mamba2-1x3x5x7"),
    pytest.param(8, (2, 24, 8), id="K8-mamba1-2x24x8"),
    pytest.param(2, (2500,), id="K2-flat-2500-three-blocks"),
]
DTYPES = [pytest.param(dt, id=DTYPE_IDS[dt]) for dt in (torch.float32, torch.bfloat16)]


@pytest.mark.parametrize("contiguous", [True, False], ids=["contiguous", "strided"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k, shape", MIX_CASES)
def test_mix_states_matches_ref(device, k, shape, dtype, contiguous):
    tensors = [randn(*shape, dtype=dtype, device=device) for _ in range(k)]
    if not contiguous:
        tensors = [strided(t) for t in tensors]
    out = skillsoup_kernels.mix_states(tensors, WEIGHTS[:k])
    assert out.dtype == torch.float32 and out.shape == torch.Size(shape)
    assert_close("mix_states", out, skillsoup_kernels.mix_states_ref(tensors, WEIGHTS[:k]), TOL[dtype])


def test_mix_states_mixed_dtypes_and_tensor_weights(device):
    tensors = [randn(3, 17, dtype=torch.bfloat16, device=device), randn(3, 17, device=device)]
    weights = torch.tensor([0.4, 0.6], device=device)
    assert_close("mixed dtypes", skillsoup_kernels.mix_states(tensors, weights),
                 skillsoup_kernels.mix_states_ref(tensors, weights), TOL[torch.float32])


def test_mix_states_rejects_bad_input(device):
    a, b = randn(2, 3, device=device), randn(3, 2, device=device)
    with pytest.raises(ValueError, match="same-shaped"):
        skillsoup_kernels.mix_states([a, b], [0.5, 0.5])
    with pytest.raises(ValueError, match="2 tensors but 1 weights"):
        skillsoup_kernels.mix_states([a, a], [1.0])


def test_mix_states_with_autograd_stays_differentiable(device):
    a = randn(4, 5, device=device).requires_grad_()
    out = skillsoup_kernels.mix_states([a, a.detach()], [2.0, 1.0])
    out.sum().backward()
    assert torch.allclose(a.grad, torch.full_like(a, 2.0))


# ---- whole SkillStates ---------------------------------------------------------------------------
def _states(device, arch, k=3, layers=3, rows=2):
    ssm_shape = (13, 5) if arch == "mamba" else (3, 4, 5)
    return [
        SkillState(
            conv=[randn(rows, 11, 4, device=device) for _ in range(layers)],
            ssm=[randn(rows, *ssm_shape, device=device) for _ in range(layers)],
            n_tokens=[5 + i] * rows, fingerprint="f" * 64, arch=arch,
        )
        for i in range(k)
    ]


POLICIES = [
    pytest.param(dict(conv="mix"), id="conv-mix"),
    pytest.param(dict(conv="top"), id="conv-top"),
    pytest.param(dict(conv="mix", base=True), id="task-arithmetic-base"),
    pytest.param(dict(conv="mix", layers=[0, 2]), id="layers-0-2"),
]


@pytest.mark.parametrize("arch", ["mamba", "mamba2"])
@pytest.mark.parametrize("policy", POLICIES)
def test_mix_skill_states_matches_mixing_spec(device, arch, policy):
    states = _states(device, arch)
    raw = [0.5, -0.2, 0.4]  # not normalised: mixing.mix normalises before calling the kernel, or not at all
    base = _states(device, arch, k=1)[0] if policy.get("base") else None
    options = dict(conv=policy["conv"], base=base, layers=policy.get("layers"))
    conv, ssm = skillsoup_kernels.mix_skill_states(states, raw, **options)
    conv_ref, ssm_ref = skillsoup_kernels.mix_skill_states_ref(states, raw, **options)
    spec = mix_ref(states, raw, normalize=False, **options)  # what skillsoup.states.mixing.mix must return
    for i in range(len(ssm)):
        assert_close(f"ssm.{i} vs ref", ssm[i], ssm_ref[i], TOL[torch.float32])
        assert_close(f"conv.{i} vs ref", conv[i], conv_ref[i], TOL[torch.float32])
        assert_close(f"ssm.{i} vs mix_ref", ssm[i], spec.ssm[i], TOL[torch.float32])
        assert_close(f"conv.{i} vs mix_ref", conv[i], spec.conv[i], TOL[torch.float32])
    assert all(t.dtype == torch.float32 for t in conv + ssm)


class _CountingKernel:
    """Stands in for a Triton kernel and records each launch grid."""

    def __init__(self, kernel):
        self.kernel, self.grids = kernel, []

    def __getitem__(self, grid):
        self.grids.append(grid)
        return self.kernel[grid]


def test_mix_skill_states_uses_one_launch_per_tensor_kind(device, monkeypatch):
    counting = _CountingKernel(mix_module._mix_kernel)
    monkeypatch.setattr(mix_module, "_mix_kernel", counting)
    skillsoup_kernels.mix_skill_states(_states(device, "mamba", k=8, layers=5), [1 / 8] * 8)
    assert [grid[1] for grid in counting.grids] == [5, 5]  # all 5 layers' SSM tensors at once, then all conv


def test_mix_skill_states_copies_what_it_does_not_mix(device):
    states = _states(device, "mamba", k=2)
    before = states[1].conv[0].clone()
    conv, ssm = skillsoup_kernels.mix_skill_states(states, [0.25, 0.75], conv="top", layers=[1])
    assert torch.equal(conv[0], before) and torch.equal(ssm[0], states[1].ssm[0])  # from the top state
    conv[0].add_(1.0)
    assert torch.equal(states[1].conv[0], before)  # a copy, not a view of the input
