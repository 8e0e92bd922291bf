"""The "stack" backend: skillsoup's own forward of a pure recurrent model (Mamba, Mamba-2,
FalconMamba), layer by layer: pre-norm, mixer with its layer's state, residual add.

Every mixer takes the state to start from and returns the state it ends in (:mod:`mamba1`,
:mod:`mamba2`, on the ops ``dispatch`` chose: PyTorch, or Triton kernels on CUDA), so any number of
tokens continue exactly from any state, in parallel. :meth:`StackBackend.step_into` is the decode
step over fixed buffers that :mod:`skillsoup.models.graphs` captures as a CUDA graph.
"""

from __future__ import annotations

import logging

import torch

from skillsoup.errors import GenerationError
from skillsoup.models import mamba1, mamba2, ops, step_ops
from skillsoup.states.state import SkillState

_MIXERS = {"mamba1": mamba1, "mamba2": mamba2}
log = logging.getLogger(__name__)


class StackBackend:
    def __init__(self, hf_model, mixer: str, ops_namespace):
        self.hf = hf_model
        self.backbone = hf_model.backbone
        self.mixer = _MIXERS[mixer]
        self.ops = ops_namespace
        self._rates: dict[int, tuple[torch.Tensor, int, torch.Tensor]] = {}
        # (the ops namespace it was built for, its decode plan or None, where the embeddings were then)
        self._plan = (None, None, None)
        pads = getattr(self.mixer, "pads_exactly", lambda mixer: True)
        self.pads_exactly = all(pads(layer.mixer) for layer in self.backbone.layers)  # padded reads are exact

    def forward(self, ids: torch.Tensor, start: SkillState, logits: str, log_decay: list | None = None,
                lengths: torch.Tensor | None = None, trace: list | None = None):
        """ids [b, l] from ``start`` -> (logits per ``logits`` or None, new state). ``log_decay`` (a
        list) collects each layer's total log-decay over these tokens (decay mixing). ``lengths``
        ([b] int64 on the device): row r's tokens from lengths[r] on are padding; the state is the
        one after the real tokens and ``logits="last"`` gives each row's last real token.
        Its n_tokens then count the padded length: the caller knows the real one.
        ``trace`` (a list) collects the residual stream after each layer (precision checks)."""
        extra = {} if log_decay is None else {"log_decay": log_decay}
        if lengths is not None:
            extra["lengths"] = lengths
        hidden, state = self._blocks(self.mixer.forward, self.backbone.embeddings(ids), start, ids.shape[1], extra,
                                     trace)
        if logits == "none":
            return None, state
        if logits == "all":
            return self._logits(hidden), state
        last = hidden[:, -1] if lengths is None else hidden[torch.arange(ids.shape[0], device=ids.device), lengths - 1]
        return self._logits(last), state

    def step(self, ids: torch.Tensor, start: SkillState):
        """ids [b] -> (logits [b, vocab], new state): one cheap recurrent update per layer. On the
        C kernels, a few calls per layer into fixed buffers (:mod:`cpu_decode`), else :meth:`step_ref`."""
        plan = self._decode_plan(start)
        if plan is None:
            return self.step_ref(ids, start)
        fixed = torch.empty_like(start.fixed)
        logits = plan.run(ids, start.fixed, fixed)
        return logits, SkillState.from_flat(start.layout, fixed, [n + 1 for n in start.n_tokens], start.fingerprint,
                                            start.arch)

    def step_ref(self, ids: torch.Tensor, start: SkillState):
        """:meth:`step` module by module (norm, mixer step on ``ops``, residual add): the reference
        of the decode plan, and the path of every model and state the plan does not cover."""
        hidden, state = self._blocks(self.mixer.step, self.backbone.embeddings(ids), start, 1, {})
        return self._logits(hidden), state

    def step_(self, ids: torch.Tensor, state: SkillState):
        """:meth:`step` that writes the new state over ``state`` (its flat buffer and n_tokens) and
        returns (logits, state): a batch of 32 rows of mamba2-130m holds 626 MB of state, which
        :meth:`step` allocates and copies again on every token. Same numbers as :meth:`step`."""
        plan = self._decode_plan(state)
        if plan is not None:
            logits = plan.run(ids, state.fixed, state.fixed)
            return logits, state.rebind(state.fixed, None, [n + 1 for n in state.n_tokens], state.meta)
        hidden, state = self._blocks(self.mixer.step, self.backbone.embeddings(ids), state, 1, {"inplace": True},
                                     into=True)
        return self._logits(hidden), state

    def _decode_plan(self, state: SkillState):
        """The ops' decode plan (``ops.decode_plan``, the C kernels) when it covers this model and
        ``state`` (float32, contiguous, on the CPU, no autograd), else None. Built once per ops
        namespace, again when a weight changed under it (without a plan: when the model was converted)."""
        build = getattr(self.ops, "decode_plan", None)
        fixed = state.fixed
        if (build is None or torch.is_grad_enabled() or fixed.dtype != torch.float32 or fixed.device.type != "cpu"
                or not fixed.is_contiguous()):
            return None
        ops_now, plan, weights_at = self._plan
        embed = self.backbone.embeddings.weight.data_ptr()  # moves when the model is converted (.to())
        if ops_now is not self.ops or (not plan.current() if plan is not None else weights_at != embed):
            plan, why = build(self)
            if plan is None:
                log.info("decode step module by module: %s", why)
            self._plan = (self.ops, plan, embed)
        if plan is None or not plan.fits(state.layout):
            return None
        return plan

    def step_into(self, ids: torch.Tensor, state: SkillState) -> torch.Tensor:
        """ids [b] -> logits [b, vocab], advancing ``state`` in place (its flat buffer; its n_tokens
        are the caller's to count). No host sync and nothing that outlives the call: the decode
        graphs capture exactly this. With the reference ops it equals :meth:`step` bitwise."""
        decode = getattr(self.ops, "decode", None) or step_ops.DECODE_REF
        self._check(state)
        hidden, out = self.backbone.embeddings(ids), None
        for i, layer in enumerate(self.backbone.layers):
            hidden, normed = decode.add_rms_norm(hidden, out, layer.norm.weight, layer.norm.variance_epsilon,
                                                 layer.residual_in_fp32)
            out = self.mixer.step_inplace(layer.mixer, normed, state.conv[i], state.ssm[i], decode,
                                          self.decay_rates(layer.mixer))
        norm_f = self.backbone.norm_f
        _, normed = decode.add_rms_norm(hidden, out, norm_f.weight, norm_f.variance_epsilon,
                                        self.backbone.layers[-1].residual_in_fp32, cast_input=False)
        return self.hf.lm_head(normed.to(self.hf.lm_head.weight.dtype)).float()

    def decay_rates(self, mixer) -> torch.Tensor:
        """A = -exp(A_log) of a mixer, computed once and again only when A_log changes in place."""
        A_log = mixer.A_log
        cached = self._rates.get(id(mixer))
        if cached is None or cached[0] is not A_log or cached[1] != A_log._version:
            cached = (A_log, A_log._version, -torch.exp(ops.upcast(A_log)))
            self._rates[id(mixer)] = cached
        return cached[2]

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone.norm_f(hidden)
        return self.hf.lm_head(hidden.to(self.hf.lm_head.weight.dtype)).float()

    def _check(self, start: SkillState) -> None:
        if start.layout.n_recurrent != len(self.backbone.layers):
            raise GenerationError(f"state has {start.layout.describe()}, the model {len(self.backbone.layers)} layers")

    def _blocks(self, mixer_fn, hidden, start: SkillState, n_new: int, extra: dict, trace: list | None = None,
                into: bool = False):
        """The residual stack -> (last hidden states, new SkillState in one flat buffer); ``into``:
        the new layer states are written over ``start``'s (a mixer that wrote them there already
        is not copied) and ``start`` itself is returned."""
        self._check(start)
        conv, ssm = [], []
        start_conv, start_ssm = start.conv, start.ssm
        for i, layer in enumerate(self.backbone.layers):
            residual = hidden.float() if layer.residual_in_fp32 else hidden
            normed = layer.norm(hidden.to(layer.norm.weight.dtype))
            out, c, s = mixer_fn(layer.mixer, normed, start_conv[i], start_ssm[i], self.ops, **extra)
            hidden = residual + out
            if into:
                for old, new in ((start_conv[i], c), (start_ssm[i], s)):
                    if new.data_ptr() != old.data_ptr():
                        old.copy_(new)
            conv.append(c)
            ssm.append(s)
            if trace is not None:
                trace.append(hidden)
        n_tokens = [n + n_new for n in start.n_tokens]
        if into:
            return hidden, start.rebind(start.fixed, None, n_tokens, start.meta)
        fixed = torch.cat([t.float().reshape(-1) for t in conv] + [t.float().reshape(-1) for t in ssm])
        return hidden, SkillState.from_flat(start.layout, fixed, n_tokens, start.fingerprint, start.arch)
