"""kernels/mix.py: the fused weighted sum against its reference, and skillsoup.states.mixing.mix on
the kernel (flat state buffers, written into a preallocated state) against mix_ref."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="the kernels need triton: pip install -e .[dev]")

import skillsoup_kernels  # noqa: E402
from kernel_cases import DTYPE_IDS, TOL, assert_close, randn, strided  # noqa: E402
from skillsoup_kernels import mix as mix_module  # noqa: E402

from skillsoup.states import mixing  # noqa: E402
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


def test_mix_states_writes_into_out(device):
    tensors = [randn(2, 300, device=device) for _ in range(3)]
    out = torch.full((2, 300), float("nan"), device=device)
    got = skillsoup_kernels.mix_states(tensors, WEIGHTS[:3], out=out)
    assert got is out
    assert_close("into out", out, skillsoup_kernels.mix_states_ref(tensors, WEIGHTS[:3]), TOL[torch.float32])
    with pytest.raises(ValueError, match="contiguous float32"):
        skillsoup_kernels.mix_states(tensors, WEIGHTS[:3], out=torch.empty(2, 300, device=device, dtype=torch.bfloat16))


# ---- whole SkillStates: the flat buffers through skillsoup.states.mixing.mix -------------------------
def _states(device, kinds, k=3, rows=2, n_kv=(4, 2, 5)):
    rec = [i for i, kind in enumerate(kinds) if "recurrent" in kind]
    att = [i for i, kind in enumerate(kinds) if "attention" in kind]
    return [
        SkillState(
            conv=[randn(rows, 11, 4, device=device) for _ in rec],
            ssm=[randn(rows, 3, 4, 5, device=device) for _ in rec],
            n_tokens=[5 + i] * rows, fingerprint="f" * 64, arch="test", layer_kinds=kinds,
            keys=[randn(rows, 2, n_kv[i], 6, device=device) for _ in att] if att else None,
            values=[randn(rows, 2, n_kv[i], 3, device=device) for _ in att] if att else None,
        )
        for i in range(k)
    ]


KINDS = [
    pytest.param(("recurrent",) * 3, id="mamba2-3-layers"),
    pytest.param(("recurrent", "attention", "none", "recurrent+attention", "attention"), id="hybrid-5-layers"),
]
POLICIES = [
    pytest.param(dict(conv="mix"), id="conv-mix"),
    pytest.param(dict(conv="top"), id="conv-top"),
    pytest.param(dict(conv="mix", base=True), id="task-arithmetic-base"),
    pytest.param(dict(conv="mix", layers=[0, 2]), id="layers-0-2"),
    pytest.param(dict(conv="mix", kv="concat"), id="kv-concat"),
]


@pytest.mark.parametrize("kinds", KINDS)
@pytest.mark.parametrize("policy", POLICIES)
def test_mix_on_the_kernel_equals_mix_ref(device, kinds, policy, monkeypatch):
    """skillsoup.states.mixing.mix takes the kernel on CUDA; here it is forced onto the device under
    test, with out= a preallocated state, and must equal the per-layer specification."""
    monkeypatch.setattr(mixing, "_use_kernel", lambda dev: True)
    states = _states(device, kinds)
    raw = [0.5, -0.2, 0.4]  # not normalised
    base = _states(device, kinds, k=1)[0] if policy.get("base") else None
    options = dict(conv=policy["conv"], base=base, layers=policy.get("layers"), kv=policy.get("kv", "top"))
    out = _states(device, kinds, k=1)[0]
    out.fixed.fill_(float("nan"))
    got = mixing.mix(states, raw, normalize=False, out=out, **options)
    spec = mix_ref(states, raw, normalize=False, **options)
    assert got is out
    assert_close("flat buffer vs mix_ref", got.fixed, spec.fixed, TOL[torch.float32])
    if got.keys is not None:
        assert torch.equal(got.keys, spec.keys) and torch.equal(got.kv_bias, spec.kv_bias)


class _CountingKernel:
    """Stands in for a Triton kernel and records each launch grid."""

    def __init__(self, kernel):
        self.kernel, self.grids = kernel, []

    def __getitem__(self, grid):
        self.grids.append(grid)
        return self.kernel[grid]


def test_mixing_whole_states_is_one_launch(device, monkeypatch):
    counting = _CountingKernel(mix_module._mix_kernel)
    monkeypatch.setattr(mix_module, "_mix_kernel", counting)
    monkeypatch.setattr(mixing, "_use_kernel", lambda dev: True)
    mixing.mix(_states(device, ("recurrent",) * 5, k=8), [1 / 8] * 8)
    assert len(counting.grids) == 1 and counting.grids[0][1] == 1  # 5 layers x 2 kinds x 8 states: one launch
