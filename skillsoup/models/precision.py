"""How exact a path is: its error against a float64 twin of the model, layer by layer and op by op.

Comparing two float32 paths with each other says only that they differ; against float64 each gets
its own error, and the question "is the kernel path as exact as the reference path" has an answer.

    float64_twin(model)              the same weights in float64 (norms and scans in float64 too)
    compare(fast, ref, demos, query) the kernel path from an injected state (capture demos, then the
                                     query) and the reference path reading demos + query in one pass,
                                     each against float64: query logits and the residual stream after
                                     every layer
    mamba1_op_errors(model, ...)     for one Mamba-1 layer, each op of a path (GEMMs, conv, scan) fed
                                     the float64 layer's own inputs: the error the op itself adds

What the reference path measured on CPU (random mamba-130m-shaped weights, 2 rows x 64+32 tokens):
query logits 2.8e-4 from float64, the residual stream gaining about 1.2e-5 per layer while every op
adds about 1e-7 to 1e-6: float32 rounding amplified by the layers, not one inexact op. See
benchmarks/gpu_exactness.py and README "GPU runtime".
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from skillsoup.models import ops
from skillsoup.states.state import relative_error


def _exact_rms_norm(module) -> None:
    """transformers' RMSNorms compute in float32 even for float64 inputs: give the twin's its
    float64 forward (same formula)."""
    def forward(hidden, *gate):
        return module.weight * (hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + module.variance_epsilon))

    module.forward = forward


def float64_twin(model):
    """A float64 copy of a stack-backend ``model`` on its device, running the reference ops (which
    keep float64: ``ops.upcast``)."""
    from skillsoup.models.base import StateModel

    hf64 = copy.deepcopy(model.hf).double().eval()
    for module in hf64.modules():
        if type(module).__name__.endswith("RMSNorm"):  # not the gated one: mamba2._gated_norm upcasts itself
            _exact_rms_norm(module)
    return StateModel(hf64, model.tokenizer, fingerprint=model.fingerprint, source=f"{model.source} (float64)",
                      impl="ref")


@dataclass
class PathError:
    """One path's relative errors against float64."""

    name: str
    logits: float
    layers: list[float] = field(default_factory=list)  # the residual stream after each layer (query tokens)


def _one_pass(model, demos: torch.Tensor, query: torch.Tensor):
    """Query logits and per-layer residual streams from reading demos + query in one pass."""
    ids = torch.cat([demos, query], dim=1).to(model.device)
    trace: list[torch.Tensor] = []
    with torch.no_grad():
        logits, _ = model.backend.forward(ids, model.empty_state(ids.shape[0]), "all", trace=trace)
    cut = demos.shape[1]
    return logits[:, cut:], [t[:, cut:] for t in trace]


def _injected(model, demos: torch.Tensor, query: torch.Tensor):
    """The same from a captured state: capture(demos), then the query alone."""
    trace: list[torch.Tensor] = []
    with torch.no_grad():
        state = model.capture(demos.to(model.device))
        logits, _ = model.backend.forward(query.to(model.device), state, "all", trace=trace)
    return logits, trace


def compare(fast, ref, demos: torch.Tensor, query: torch.Tensor, twin=None) -> dict[str, PathError]:
    """{"kernels": injected path on ``fast``'s ops, "reference": one pass on ``ref``'s ops,
    "reference, injected": the reference ops from the captured state} against float64 (``twin``, or
    ``float64_twin(ref)``). ``fast`` and ``ref`` wrap the same weights."""
    twin = twin or float64_twin(ref)
    want_logits, want_layers = _one_pass(twin, demos, query)

    def error(name, got):
        logits, layers = got
        return PathError(name, relative_error(logits, want_logits),
                         [relative_error(a, b) for a, b in zip(layers, want_layers)])

    return {"kernels": error("kernels", _injected(fast, demos, query)),
            "reference": error("reference", _one_pass(ref, demos, query)),
            "reference, injected": error("reference, injected", _injected(ref, demos, query))}


def verdict(errors: dict[str, PathError], limit: float, factor: float = 2.0) -> dict[str, bool]:
    """The issue's two tests: the kernel path's error is at most ``factor`` times the reference
    path's, and at most ``limit``."""
    kernel, reference = errors["kernels"].logits, errors["reference"].logits
    return {f"<= {factor:g}x reference": kernel <= factor * reference, f"<= {limit:g}": kernel <= limit}


def mamba1_op_errors(model, twin, ids: torch.Tensor, layer: int, impl) -> dict[str, float]:
    """For layer ``layer`` of a Mamba-1 ``model`` (ops ``impl``): each op fed the float64 twin's own
    input to it (cast to the model's dtype), against the twin's output of that op. The error an op
    adds by itself, separate from what earlier layers and ops hand it."""
    from skillsoup.models import mamba1

    ids = ids.to(model.device)
    trace: list[torch.Tensor] = []
    with torch.no_grad():
        twin.backend.forward(ids, twin.empty_state(ids.shape[0]), "none", trace=trace)
        h64 = twin.hf.backbone.embeddings(ids) if layer == 0 else trace[layer - 1]  # the layer's input
        m32, m64 = model.hf.backbone.layers[layer].mixer, twin.hf.backbone.layers[layer].mixer
        normed = twin.hf.backbone.layers[layer].norm(h64)

        def c(t):
            return t.to(model.dtype)

        def conv(mixer, x, run):
            return run(x, mixer.conv1d.weight.squeeze(1), mixer.conv1d.bias, None, activation=mixer.activation)[0]

        def scan(mixer, x, dt, B, C, gate, run):
            A = -torch.exp(ops.upcast(mixer.A_log))
            return run(x, dt.transpose(1, 2), A, B.transpose(1, 2), C.transpose(1, 2), D=mixer.D, z=gate,
                       delta_bias=mixer.dt_proj.bias, delta_softplus=True)[0]

        xz = m64.in_proj(normed)
        x, gate = xz.transpose(1, 2).chunk(2, dim=1)
        xc = conv(m64, x, ops.causal_conv1d)
        dt, B, C = mamba1._split_xproj(m64, xc.transpose(1, 2))
        y = scan(m64, xc, dt, B, C, gate, ops.selective_scan)
        return {
            "in_proj (GEMM)": relative_error(m32.in_proj(c(normed)), xz),
            "causal conv + silu": relative_error(conv(m32, c(x), impl.causal_conv1d), xc),
            "x_proj, dt_proj (GEMMs)": relative_error(mamba1._split_xproj(m32, c(xc).transpose(1, 2))[0], dt),
            "selective scan (+D, gate)": relative_error(scan(m32, c(xc), c(dt), c(B), c(C), c(gate),
                                                             impl.selective_scan), y),
            "out_proj (GEMM)": relative_error(m32.out_proj(c(y.transpose(1, 2))), m64.out_proj(y.transpose(1, 2))),
        }
