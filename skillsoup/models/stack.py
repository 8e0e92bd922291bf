"""The "stack" backend: skillsoup's own forward of a pure recurrent model (Mamba, Mamba-2,
FalconMamba), layer by layer: pre-norm, mixer with its layer's state, residual add.

Every mixer takes the state to start from and returns the state it ends in (:mod:`mamba1`,
:mod:`mamba2`, on the ops ``dispatch`` chose: PyTorch, or Triton kernels on CUDA), so any number of
tokens continue exactly from any state, in parallel.
"""

from __future__ import annotations

import torch

from skillsoup.errors import GenerationError
from skillsoup.models import mamba1, mamba2
from skillsoup.states.state import SkillState

_MIXERS = {"mamba1": mamba1, "mamba2": mamba2}


class StackBackend:
    def __init__(self, hf_model, mixer: str, ops):
        self.hf = hf_model
        self.backbone = hf_model.backbone
        self.mixer = _MIXERS[mixer]
        self.ops = ops

    def forward(self, ids: torch.Tensor, start: SkillState, logits: str, log_decay: list | None = None):
        """ids [b, l] from ``start`` -> (logits per ``logits`` or None, new state). ``log_decay`` (a
        list) collects each layer's total log-decay over these tokens (decay mixing)."""
        extra = {} if log_decay is None else {"log_decay": log_decay}
        hidden, state = self._blocks(self.mixer.forward, self.backbone.embeddings(ids), start, ids.shape[1], extra)
        if logits == "none":
            return None, state
        return self._logits(hidden[:, -1] if logits == "last" else hidden), state

    def step(self, ids: torch.Tensor, start: SkillState):
        """ids [b] -> (logits [b, vocab], new state): one cheap recurrent update per layer."""
        hidden, state = self._blocks(self.mixer.step, self.backbone.embeddings(ids), start, 1, {})
        return self._logits(hidden), state

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone.norm_f(hidden)
        return self.hf.lm_head(hidden.to(self.hf.lm_head.weight.dtype)).float()

    def _blocks(self, mixer_fn, hidden, start: SkillState, n_new: int, extra: dict):
        """The residual stack -> (last hidden states, new SkillState in one flat buffer)."""
        if start.layout.n_recurrent != len(self.backbone.layers):
            raise GenerationError(f"state has {start.layout.describe()}, the model {len(self.backbone.layers)} layers")
        conv, ssm = [], []
        for i, layer in enumerate(self.backbone.layers):
            residual = hidden.float() if layer.residual_in_fp32 else hidden
            normed = layer.norm(hidden.to(layer.norm.weight.dtype))
            out, c, s = mixer_fn(layer.mixer, normed, start.conv[i], start.ssm[i], self.ops, **extra)
            hidden = residual + out
            conv.append(c)
            ssm.append(s)
        fixed = torch.cat([t.float().reshape(-1) for t in conv] + [t.float().reshape(-1) for t in ssm])
        n_tokens = [n + n_new for n in start.n_tokens]
        return hidden, SkillState.from_flat(start.layout, fixed, n_tokens, start.fingerprint, start.arch)
