"""The CPU decode step of a whole Mamba / Mamba-2 stack, four calls per layer into fixed buffers.

Run module by module, one decode token of a small model is mostly glue: transformers' RMSNorm is
eight PyTorch ops per layer, then the residual add, the fused mixer step's checks (dtype,
contiguity, autograd), its allocations and its list of nineteen pointers rebuilt on every token. On
the bundled demo model that glue was about nine tenths of a step. Here each layer is

    ssc_add_rms_norm (residual += previous out; normed = RMSNorm(residual))  ->  in_proj (torch.mm)
    ->  ssc_mamba1_step / ssc_mamba2_step (conv window, conv, SSM update, gate)  ->  out_proj (torch.mm)

on buffers allocated once per thread and batch size. What depends only on the weights (pointers,
-exp(A_log), dt_proj's weight transposed) is gathered once into a :class:`DecodePlan`;
:meth:`DecodePlan.current` checks before every token that no weight was replaced, re-pointed
(``.data =``, ``.to()``) or, for A_log and dt_proj whose derived values are cached, changed in
place. The matmuls stay PyTorch's (MKL): a decode step of a 130m model is mostly their memory traffic.

Twin: ``StackBackend.step_ref`` (the module-by-module step on the same ops); tests/models/
test_cpu_decode.py compares them. A model the plan does not cover (weights that are not float32,
norms on dt / B / C, an activation other than silu) gets ``None`` from :meth:`DecodePlan.build`
and takes that path.
"""

from __future__ import annotations

import math
import threading

import torch

from skillsoup.models import cpu_ops

MAX_BATCH_SIZES = 8  # buffer sets kept per thread (a serving batch shrinks and grows one row at a time)
_F32 = 4  # bytes


def _ptr(t) -> int:
    return 0 if t is None else t.data_ptr()


class DecodePlan:
    """One stack model's decode step on the C kernels; build with :meth:`build`."""

    def __init__(self, backend, why_not: list[str]):
        backbone, hf = backend.backbone, backend.hf
        self.mixer_kind = backend.mixer.__name__.rsplit(".", 1)[-1]  # "mamba1" or "mamba2"
        self.lib = cpu_ops._lib()
        self.embed = backbone.embeddings.weight
        self.head_t, self.head_bias = hf.lm_head.weight.t(), hf.lm_head.bias
        self.norm_f = (backbone.norm_f.weight, float(backbone.norm_f.variance_epsilon))
        self.hidden = self.embed.shape[1]
        watched = [(backbone.embeddings._parameters, "weight"), (hf.lm_head._parameters, "weight"),
                   (hf.lm_head._parameters, "bias"), (backbone.norm_f._parameters, "weight")]
        self.layers, self._derived_from = [], []  # weights with values derived from them (versions checked)
        for layer in backbone.layers:
            mixer = layer.mixer
            watched += [(layer.norm._parameters, "weight")]
            watched += [(m._parameters, name) for m in (mixer.in_proj, mixer.out_proj, mixer.conv1d)
                        for name in ("weight", "bias")]
            watched += [(mixer._parameters, name) for name in ("A_log", "D", "dt_bias")]
            watched += [(m._parameters, name) for m in (getattr(mixer, "x_proj", None), getattr(mixer, "dt_proj", None),
                                                        getattr(mixer, "norm", None)) if m is not None
                        for name in ("weight", "bias")]
            self.layers.append(self._layer(layer, why_not))
        self._watched = [(owner, name, owner.get(name)) for owner, name in watched]
        self._tensors = [t for _, _, t in self._watched if t is not None]
        for t in self._tensors:
            if t.dtype != torch.float32 or t.device.type != "cpu" or not t.is_contiguous():
                why_not.append(f"a weight of shape {tuple(t.shape)} is {t.dtype} on {t.device}"
                               f"{'' if t.is_contiguous() else ', not contiguous'} (the kernels read float32 CPU)")
                break
        self._ptrs = tuple(t.data_ptr() for t in self._tensors)
        self._versions = tuple(w._version for w in self._derived_from)
        self._local = threading.local()
        self._layout = None  # the last state layout that fits

    @classmethod
    def build(cls, backend) -> tuple[DecodePlan | None, str]:
        """(plan, '') for a model the kernels cover, else (None, why not)."""
        ok, why = cpu_ops.available()
        if not ok:
            return None, why
        why_not: list[str] = []
        try:
            plan = cls(backend, why_not)
        except AttributeError as exc:  # a mixer of another family
            return None, f"the mixer is not one the decode kernels know ({exc})"
        return (None, why_not[0]) if why_not else (plan, "")

    def _layer(self, layer, why_not: list[str]) -> tuple:
        """(norm weight, eps, in_proj weight^T, bias, the mixer's kernel call, out_proj weight^T, bias,
        the values derived from weights that the call reads): what one layer's step needs, in the
        order :meth:`run` reads it."""
        mixer = layer.mixer
        if getattr(mixer, "activation", None) not in ("silu", "swish"):
            why_not.append(f"activation {getattr(mixer, 'activation', None)!r} (the kernels apply silu)")
        if getattr(mixer, "b_layernorm", None) is not None:
            why_not.append("RMS norms on dt, B and C (FalconMamba, Jamba), which the kernels do not apply")
        A = (-torch.exp(mixer.A_log.detach().float())).contiguous()
        self._derived_from.append(mixer.A_log)
        conv_w, conv_b = mixer.conv1d.weight, mixer.conv1d.bias
        lib, k = self.lib, mixer.conv_kernel_size
        if self.mixer_kind == "mamba1":
            d, n, r = mixer.intermediate_size, mixer.ssm_state_size, mixer.time_step_rank
            self.shapes = ((d, k), (d, n))  # per-row conv and SSM state the kernel reads
            if mixer.dt_proj.bias is None:
                why_not.append("dt_proj has no bias")
            dt_wt = mixer.dt_proj.weight.detach().t().contiguous()  # [r, d]: what the kernel reads
            self._derived_from.append(mixer.dt_proj.weight)
            derived = (A, dt_wt)  # kept alive by the layer's tuple
            weights = (conv_w.data_ptr(), _ptr(conv_b), mixer.x_proj.weight.data_ptr(), dt_wt.data_ptr(),
                       _ptr(mixer.dt_proj.bias), A.data_ptr(), _ptr(mixer.D))
            width = 2 * d
            kernel = lib.ssc_mamba1_step

            def call(b, proj, conv_in, conv_out, s_in, s_out, y):
                kernel(b, d, n, r, k, proj, width, conv_in, conv_out, *weights, s_in, s_out, y)
        else:
            h, p, g, n = mixer.num_heads, mixer.head_dim, mixer.n_groups, mixer.ssm_state_size
            d = h * p
            width = d + mixer.conv_dim + h
            self.shapes = ((mixer.conv_dim, k), (h, p, n))
            lo, hi = (float(v) for v in mixer.time_step_limit)
            derived = (A,)
            norm = mixer.norm
            head = (conv_w.data_ptr(), _ptr(conv_b), A.data_ptr(), _ptr(mixer.D), _ptr(mixer.dt_bias), lo, hi)
            tail = (norm.weight.data_ptr(), norm.group_size, float(norm.variance_epsilon))
            kernel = lib.ssc_mamba2_step

            def call(b, proj, conv_in, conv_out, s_in, s_out, y):
                kernel(b, h, p, g, n, k, proj, width, conv_in, conv_out, *head, s_in, s_out, *tail, y)
        if mixer.in_proj.weight.shape[0] != width:
            why_not.append(f"in_proj gives {mixer.in_proj.weight.shape[0]} values per token, the kernel reads {width}")
        self.width, self.inner = width, d
        return (layer.norm.weight.data_ptr(), float(layer.norm.variance_epsilon), mixer.in_proj.weight.t(),
                mixer.in_proj.bias, call, mixer.out_proj.weight.t(), mixer.out_proj.bias, derived)

    def current(self) -> bool:
        """Whether the weights are still the ones the plan points at (checked before every token)."""
        return (all(owner.get(name) is t for owner, name, t in self._watched)
                and tuple(t.data_ptr() for t in self._tensors) == self._ptrs
                and tuple(w._version for w in self._derived_from) == self._versions)

    def fits(self, layout) -> bool:
        """Whether states of ``layout`` are what the kernels read: a conv window and an SSM state
        per layer of the shapes of this model's mixers (remembered by identity: layouts are shared)."""
        if layout is self._layout:
            return True
        ok = (layout.n_recurrent == len(self.layers) == layout.num_layers
              and (layout.conv_shape, layout.recurrent_shape) == self.shapes)
        if ok:
            self._layout = layout
        return ok

    def _buffers(self, b: int) -> tuple:
        """This thread's buffers for b rows, with their pointers, and the byte offsets of the state:
        one layer's conv windows, one layer's SSM states, where the SSM section starts."""
        sets = getattr(self._local, "sets", None)
        if sets is None:
            sets = self._local.sets = {}
        bufs = sets.get(b)
        if bufs is None:
            if len(sets) >= MAX_BATCH_SIZES:
                sets.pop(next(iter(sets)))
            empty = lambda *shape: torch.empty(*shape, dtype=torch.float32)  # noqa: E731
            with torch.inference_mode(False):  # made under inference_mode, they could not be written outside it
                tensors = (empty(b, self.hidden), empty(b, self.hidden), empty(b, self.width), empty(b, self.inner),
                           empty(b, self.hidden))  # residual, normed, proj, y, out
            conv, ssm = (math.prod(shape) for shape in self.shapes)
            offsets = (_F32 * b * conv, _F32 * b * ssm, _F32 * b * conv * len(self.layers))
            bufs = sets[b] = (*tensors, *(t.data_ptr() for t in tensors), *offsets)
        return bufs

    def run(self, ids: torch.Tensor, src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """ids [b] (int64), the flat float32 state ``src`` (a layout that :meth:`fits`) -> logits
        [b, vocab]; the new state is written into ``dst`` (which may be ``src``: each element is
        read before it is written)."""
        b = ids.shape[0]
        residual, normed, proj, y, out, res_p, normed_p, proj_p, y_p, out_p, conv_step, ssm_step, ssm_start = \
            self._buffers(b)
        norm = self.lib.ssc_add_rms_norm
        torch.index_select(self.embed, 0, ids, out=residual)
        conv_in, conv_out = src.data_ptr(), dst.data_ptr()
        s_in, s_out = conv_in + ssm_start, conv_out + ssm_start
        add, hidden = 0, self.hidden
        for norm_w, eps, in_t, in_b, call, out_t, out_b, _ in self.layers:
            norm(b, hidden, res_p, add, norm_w, eps, normed_p)
            torch.mm(normed, in_t, out=proj) if in_b is None else torch.addmm(in_b, normed, in_t, out=proj)
            call(b, proj_p, conv_in, conv_out, s_in, s_out, y_p)
            torch.mm(y, out_t, out=out) if out_b is None else torch.addmm(out_b, y, out_t, out=out)
            conv_in, conv_out, add = conv_in + conv_step, conv_out + conv_step, out_p
            s_in, s_out = s_in + ssm_step, s_out + ssm_step
        norm(b, hidden, res_p, add, self.norm_f[0].data_ptr(), self.norm_f[1], normed_p)
        if self.head_bias is None:
            return torch.mm(normed, self.head_t)
        return torch.addmm(self.head_bias, normed, self.head_t)
