"""kernels/selective_state_update.py: one Mamba-1 decode step against ops.selective_state_update, and
a run of steps against the parallel scan (step-by-step decoding equals the parallel forward)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="the kernels need triton: pip install -e .[dev]")

import skillsoup_kernels  # noqa: E402
from kernel_cases import DTYPE_IDS, TOL, assert_close, randn, strided  # noqa: E402

SHAPES = [  # b, d, n
    pytest.param(1, 4, 4, id="b1-d4-n4"),
    pytest.param(3, 13, 5, id="odd-b3-d13-n5"),
    pytest.param(2, 70, 16, id="two-d-blocks-n16"),
]
DTYPES = [pytest.param(dt, id=DTYPE_IDS[dt]) for dt in (torch.float32, torch.bfloat16)]


def _inputs(b, d, n, dtype, device):
    return dict(
        state=randn(b, d, n, device=device),  # states are float32
        x=randn(b, d, dtype=dtype, device=device),
        dt=randn(b, d, dtype=dtype, device=device),
        A=-torch.rand(d, n, device=device) * 3 - 0.1,
        B=randn(b, n, dtype=dtype, device=device),
        C=randn(b, n, dtype=dtype, device=device),
        D=randn(d, dtype=dtype, device=device),
        z=randn(b, d, dtype=dtype, device=device),
        dt_bias=randn(d, dtype=dtype, device=device, scale=0.5) - 1.0,
        dt_softplus=True,
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b, d, n", SHAPES)
def test_selective_state_update_matches_ref(device, b, d, n, dtype):
    args = _inputs(b, d, n, dtype, device)
    before = args["state"].clone()
    y, new_state = skillsoup_kernels.selective_state_update(**args)
    y_ref, state_ref = skillsoup_kernels.selective_state_update_ref(**args)
    assert_close("step y", y, y_ref, TOL[dtype])
    assert_close("step state", new_state, state_ref, TOL[dtype])
    assert torch.equal(args["state"], before), "the input state must not be modified"


def test_selective_state_update_strided_and_bare(device):
    args = _inputs(2, 5, 4, torch.float32, device)
    args.update(state=strided(args["state"]), x=strided(args["x"]), B=strided(args["B"]), D=None, z=None, dt_bias=None,
                dt=args["dt"].abs(), dt_softplus=False)
    y, new_state = skillsoup_kernels.selective_state_update(**args)
    y_ref, state_ref = skillsoup_kernels.selective_state_update_ref(**args)
    assert_close("bare step y", y, y_ref, TOL[torch.float32])
    assert_close("bare step state", new_state, state_ref, TOL[torch.float32])


def test_steps_equal_the_scan(device):
    b, d, n, l = 1, 3, 4, 5
    args = _inputs(b, d, n, torch.float32, device)
    u, dt, z = (randn(b, d, l, device=device) for _ in range(3))
    B, C = randn(b, n, l, device=device), randn(b, n, l, device=device)
    common = dict(A=args["A"], D=args["D"], delta_bias=args["dt_bias"], delta_softplus=True)
    y_scan, h_scan = skillsoup_kernels.selective_scan(u, dt, B=B, C=C, z=z, initial_state=args["state"], **common)
    state, ys = args["state"], []
    for t in range(l):
        y, state = skillsoup_kernels.selective_state_update(
            state, u[..., t], dt[..., t], args["A"], B[..., t], C[..., t], args["D"], z[..., t], args["dt_bias"], True
        )
        ys.append(y)
    assert_close("steps vs scan y", torch.stack(ys, dim=-1), y_scan, TOL[torch.float32])
    assert_close("steps vs scan state", state, h_scan, TOL[torch.float32])
