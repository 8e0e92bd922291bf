"""kernels/ssd_state_update.py: one Mamba-2 decode step against ops.ssd_state_update."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="the kernels need triton: pip install -e .[dev]")

import skillsoup_kernels  # noqa: E402
from kernel_cases import DTYPE_IDS, TOL, assert_close, randn, strided  # noqa: E402

SHAPES = [  # b, h, p, n
    pytest.param(1, 2, 4, 4, id="b1-h2-p4-n4"),
    pytest.param(3, 3, 5, 7, id="odd-b3-h3-p5-n7"),
    pytest.param(1, 2, 70, 8, id="two-p-blocks"),
]
DTYPES = [pytest.param(dt, id=DTYPE_IDS[dt]) for dt in (torch.float32, torch.bfloat16)]
LIMITS = [pytest.param((0.0, float("inf")), id="no-limit"), pytest.param((0.05, 0.5), id="limit-0.05-0.5")]


def _inputs(b, h, p, n, dtype, device, dt_limit):
    return dict(
        state=randn(b, h, p, n, device=device),  # states are float32
        x=randn(b, h, p, dtype=dtype, device=device),
        dt=randn(b, h, dtype=dtype, device=device),
        A=-torch.rand(h, device=device) * 3 - 0.1,  # [h]
        B=randn(b, h, n, dtype=dtype, device=device),
        C=randn(b, h, n, dtype=dtype, device=device),
        D=randn(h, dtype=dtype, device=device),
        dt_bias=randn(h, dtype=dtype, device=device, scale=0.5) - 1.0,
        dt_softplus=True,
        dt_limit=dt_limit,
    )


@pytest.mark.parametrize("dt_limit", LIMITS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b, h, p, n", SHAPES)
def test_ssd_state_update_matches_ref(device, b, h, p, n, dtype, dt_limit):
    args = _inputs(b, h, p, n, dtype, device, dt_limit)
    before = args["state"].clone()
    y, new_state = skillsoup_kernels.ssd_state_update(**args)
    y_ref, state_ref = skillsoup_kernels.ssd_state_update_ref(**args)
    assert_close("ssd step y", y, y_ref, TOL[dtype])
    assert_close("ssd step state", new_state, state_ref, TOL[dtype])
    assert torch.equal(args["state"], before), "the input state must not be modified"


def test_ssd_state_update_strided_and_bare(device):
    args = _inputs(2, 3, 4, 5, torch.float32, device, (0.0, float("inf")))
    # B and C sliced out of one [b, h, 2n] tensor, as a caller splitting a projection would
    bc = randn(2, 3, 10, device=device)
    args.update(state=strided(args["state"]), x=strided(args["x"]), B=bc[..., :5], C=bc[..., 5:], D=None, dt_bias=None,
                dt=args["dt"].abs(), dt_softplus=False)
    y, new_state = skillsoup_kernels.ssd_state_update(**args)
    y_ref, state_ref = skillsoup_kernels.ssd_state_update_ref(**args)
    assert_close("bare ssd step y", y, y_ref, TOL[torch.float32])
    assert_close("bare ssd step state", new_state, state_ref, TOL[torch.float32])
