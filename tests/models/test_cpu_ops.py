"""The fused CPU kernels equal their PyTorch twins: odd shapes, block and chunk boundaries, huge
decays, initial states, strided inputs, batch > 1, every option. Fresh outputs are NaN-filled, so an
element a kernel forgets to write fails the comparison."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close, tiny_config

from skillsoup.models import cpu_ops, cpu_steps, ops

RATIO = 2e-5

pytestmark = pytest.mark.skipif(not cpu_ops.available()[0], reason="the C kernels do not build here")


@pytest.fixture(autouse=True)
def nan_outputs(monkeypatch):
    monkeypatch.setattr(cpu_ops, "new", lambda *shape: torch.full(shape, float("nan")))


@pytest.fixture(params=[1, 3], ids=["1-thread", "3-threads"])
def threads(request, monkeypatch):
    """Every kernel call on this many threads, whatever its size (3: more threads than cores)."""
    monkeypatch.setattr(cpu_ops, "_threads", lambda seconds: request.param)


def _token_major(t):
    """Same values, stored [b, l, c] as the projections produce them (the mixers' layout)."""
    return t.transpose(1, 2).contiguous().transpose(1, 2)


def _scan_inputs(b, d, n, l, dt_scale, seed, layout="channel-major"):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    u, delta, z, B, C = r(b, d, l), r(b, d, l) * dt_scale, r(b, d, l), r(b, n, l), r(b, n, l)
    if layout == "token-major":
        u, delta, z, B, C = map(_token_major, (u, delta, z, B, C))
    elif layout == "sliced":  # every other token of a longer tensor: no unit stride anywhere in time
        u, delta, z, B, C = (torch.repeat_interleave(t, 2, dim=-1)[..., ::2] for t in (u, delta, z, B, C))
    return dict(u=u, delta=delta, A=-torch.exp(r(d, n)), B=B, C=C, D=r(d), z=z, delta_bias=r(d),
                delta_softplus=True, initial_state=r(b, d, n))


@pytest.mark.parametrize(
    "b,d,n,l,dt_scale,layout",
    [(1, 1, 1, 1, 1.0, "channel-major"), (1, 3, 2, 1, 1.0, "channel-major"), (2, 16, 16, 64, 1.0, "token-major"),
     (2, 17, 5, 65, 1.0, "token-major"), (3, 33, 3, 129, 0.5, "sliced"), (1, 40, 17, 63, 30.0, "channel-major"),
     (2, 7, 16, 130, 100.0, "token-major"), (1, 130, 4, 200, 1.0, "channel-major")],
    ids=["1x1x1", "one-token", "one-block-one-chunk", "block+1-chunk+1", "odd-sliced-chunks", "huge-decay",
         "huge-decay-b2", "many-blocks"],
)
def test_selective_scan_equals_reference(b, d, n, l, dt_scale, layout, threads):
    kw = _scan_inputs(b, d, n, l, dt_scale, seed=d * l, layout=layout)
    y, h = cpu_ops.selective_scan(**kw)
    y_ref, h_ref = ops.selective_scan_ref(**kw)
    assert_close("y", y, y_ref, RATIO)
    assert_close("final state", h, h_ref, RATIO)


@pytest.mark.parametrize(
    "drop", [("D", "z", "delta_bias", "initial_state"), ("delta_softplus",), ("z",), ("initial_state", "D")],
    ids=["bare", "raw-delta", "no-gate", "zero-start"],
)
def test_selective_scan_options(drop):
    kw = _scan_inputs(2, 20, 6, 70, 0.5, seed=4)
    for name in drop:
        kw[name] = False if name == "delta_softplus" else None
    if "delta_softplus" in drop:  # raw delta may be negative: exp(dt A) > 1 must still match
        kw["delta"], kw["delta_bias"] = kw["delta"].abs() * 0.05 - 0.01, None
    y, h = cpu_ops.selective_scan(**kw)
    y_ref, h_ref = ops.selective_scan_ref(**kw)
    assert_close("y", y, y_ref, RATIO)
    assert_close("final state", h, h_ref, RATIO)


def test_selective_scan_continues_across_calls():
    kw = _scan_inputs(2, 18, 4, 90, 1.0, seed=7, layout="token-major")
    y, h = cpu_ops.selective_scan(**kw)
    cut = 37
    part = lambda sl: {k: (v[..., sl] if torch.is_tensor(v) and v.dim() == 3 and v.shape[-1] == 90 else v)  # noqa: E731
                       for k, v in kw.items()}
    y1, h1 = cpu_ops.selective_scan(**part(slice(0, cut)))
    y2, h2 = cpu_ops.selective_scan(**{**part(slice(cut, None)), "initial_state": h1})
    assert_close("y", torch.cat([y1, y2], -1), y, RATIO)
    assert_close("h", h2, h, RATIO)


def test_selective_scan_takes_the_reference_path_under_autograd():
    kw = _scan_inputs(1, 5, 3, 20, 1.0, seed=2)
    u = kw.pop("u").requires_grad_(True)
    y, _ = cpu_ops.selective_scan(u, **kw)
    y.sum().backward()
    assert u.grad is not None and torch.isfinite(u.grad).all()


# state sizes off the vector (5), below it and packed several channels to a vector (4, 8: the demo
# model's; with a channel tail when d is not a multiple of the channels per vector), one vector (16)
@pytest.mark.parametrize("d,n", [(21, 5), (21, 8), (35, 4), (32, 8), (21, 16)])
def test_selective_state_update_equals_reference(d, n):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    b = 3
    xz = r(b, 2 * d)  # x and z as column slices of one row, as in_proj gives them
    args = (r(b, d, n), xz[:, :d], r(b, d) * 3, -torch.exp(r(d, n)), r(b, n), r(b, n))
    kw = dict(D=r(d), z=xz[:, d:], dt_bias=r(d), dt_softplus=True)
    y, s = cpu_ops.selective_state_update(*args, **kw)
    y_ref, s_ref = ops.selective_state_update(*args, **kw)
    assert_close("y", y, y_ref, RATIO)
    assert_close("state", s, s_ref, RATIO)


@pytest.mark.parametrize("k,l,start,act", [(4, 1, True, "silu"), (4, 3, False, None), (2, 40, True, "silu"),
                                          (4, 70, True, None)], ids=["one", "shorter-than-k", "k2", "long"])
def test_causal_conv1d_equals_reference(k, l, start, act, threads):
    g = torch.Generator().manual_seed(l)
    b, c = 2, 19
    x = _token_major(torch.randn(b, c, l, generator=g))
    w, bias = torch.randn(c, k, generator=g), torch.randn(c, generator=g)
    s0 = torch.randn(b, c, k, generator=g) if start else None
    out, final = cpu_ops.causal_conv1d(x, w, bias, s0, act)
    out_ref, final_ref = ops.causal_conv1d(x, w, bias, s0, act)
    assert_close("out", out, out_ref, RATIO)
    assert torch.equal(final, final_ref)


def _ssd_inputs(b, l, h, p, g, n, seed, start=True, dt_limit=(0.0, float("inf"))):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    xbc = r(b, l, h * p + 2 * g * n + 3)  # x, B, C as column slices of one buffer (the conv output)
    x = xbc[..., : h * p].reshape(b, l, h, p)
    B = xbc[..., h * p : h * p + g * n].reshape(b, l, g, n)
    C = xbc[..., h * p + g * n : h * p + 2 * g * n].reshape(b, l, g, n)
    return dict(x=x, dt=r(b, l, h), A=-torch.exp(r(h)), B=B, C=C, D=r(h), dt_bias=r(h), dt_softplus=True,
                dt_limit=dt_limit, initial_states=r(b, h, p, n) if start else None)


@pytest.mark.parametrize(
    "b,l,h,p,g,n,start,limit",
    [(1, 1, 2, 3, 1, 5, True, (0.0, float("inf"))), (2, 17, 4, 16, 2, 8, True, (0.0, float("inf"))),
     (2, 65, 6, 20, 3, 7, False, (0.0, float("inf"))), (1, 130, 2, 17, 1, 16, True, (0.01, 0.5))],
    ids=["one-token", "groups", "odd-head-dim-zero-start", "clamped-dt"],
)
def test_ssd_scan_equals_reference(b, l, h, p, g, n, start, limit, threads):
    kw = _ssd_inputs(b, l, h, p, g, n, seed=l, start=start, dt_limit=limit)
    y, s = cpu_ops.ssd_scan(**kw)
    y_ref, s_ref = ops.ssd_scan_ref(**kw)
    assert_close("y", y, y_ref, RATIO)
    assert_close("final state", s, s_ref, RATIO)


def test_ssd_state_update_equals_reference():
    kw = _ssd_inputs(3, 1, 4, 6, 2, 5, seed=1)
    rep = lambda t: t[:, 0].repeat_interleave(2, dim=1)  # noqa: E731  per head, as mamba2.step passes them
    args = (kw["initial_states"], kw["x"][:, 0], kw["dt"][:, 0], kw["A"], rep(kw["B"]), rep(kw["C"]))
    opts = dict(D=kw["D"], dt_bias=kw["dt_bias"], dt_softplus=True, dt_limit=(0.0, 3.0))
    y, s = cpu_ops.ssd_state_update(*args, **opts)
    y_ref, s_ref = ops.ssd_state_update(*args, **opts)
    assert_close("y", y, y_ref, RATIO)
    assert_close("state", s, s_ref, RATIO)


@pytest.mark.parametrize("arch,n", [("mamba", 6), ("mamba", 8), ("mamba2", 6)])
def test_fused_decode_step_equals_the_mixers_step(arch, n):
    from transformers import Mamba2ForCausalLM, MambaForCausalLM

    torch.manual_seed(0)
    # channel counts off the 16-channel block; Mamba-2: 10 heads of 8; Mamba-1 with 8 states: packed
    cfg = tiny_config(arch, hidden_size=40, state_size=n, **({} if arch == "mamba" else {"num_heads": 10}))
    model = (MambaForCausalLM if arch == "mamba" else Mamba2ForCausalLM)(cfg).eval()
    mixer = model.backbone.layers[1].mixer
    fused, ref = (cpu_steps.mamba1_step, cpu_steps.mamba1_step_ref) if arch == "mamba" else (
        cpu_steps.mamba2_step, cpu_steps.mamba2_step_ref)
    conv_shape = (mixer.intermediate_size if arch == "mamba" else mixer.conv_dim, mixer.conv_kernel_size)
    ssm_shape = (mixer.intermediate_size, n) if arch == "mamba" else (mixer.num_heads, mixer.head_dim, n)
    hidden, conv, ssm = torch.randn(2, 40), torch.randn(2, *conv_shape), torch.randn(2, *ssm_shape)
    with torch.no_grad():
        out, conv_new, ssm_new = fused(mixer, hidden, conv, ssm)
        out_ref, conv_ref, ssm_ref = ref(mixer, hidden, conv, ssm)
    assert_close("out", out, out_ref, RATIO)
    assert torch.equal(conv_new, conv_ref)
    assert_close("ssm", ssm_new, ssm_ref, RATIO)
    conv_own, ssm_own = conv.clone(), ssm.clone()  # in place: the kernel writes over what it reads
    with torch.no_grad():
        out_own, conv_back, ssm_back = fused(mixer, hidden, conv_own, ssm_own, inplace=True)
    assert conv_back is conv_own and ssm_back is ssm_own
    assert torch.equal(out_own, out) and torch.equal(conv_own, conv_new) and torch.equal(ssm_own, ssm_new)
    with torch.no_grad():  # not covered, the caller takes the PyTorch path: norms on dt, B, C; bfloat16
        mixer.b_layernorm = torch.nn.Identity()  # FalconMamba's and Jamba's mixers have them
        assert fused(mixer, hidden, conv, ssm) is None
        del mixer.b_layernorm
        assert fused(mixer.to(torch.bfloat16), hidden.bfloat16(), conv, ssm) is None
