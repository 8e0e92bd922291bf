"""StateModel: a Mamba / Mamba-2 causal LM whose recurrent state is a value you hold.

``forward(ids, state)`` runs any number of tokens from any state, exactly and in parallel;
``capture`` keeps only the state; ``step`` is the cheap one-token update used for decoding.
The model never sees skills or files: it takes token ids and SkillStates, and returns them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import torch

from skillsoup.errors import GenerationError, ModelLoadError, StateMismatchError
from skillsoup.models import dispatch, mamba1, mamba2
from skillsoup.states.state import SkillState, validate

log = logging.getLogger(__name__)

_MIXERS = {"mamba": mamba1, "mamba2": mamba2}


class StateModel:
    """Wraps a loaded ``MambaForCausalLM`` or ``Mamba2ForCausalLM`` (see :func:`load_model`)."""

    def __init__(self, hf_model, tokenizer=None, *, fingerprint: str, source: str = "", impl: str = "auto"):
        self.hf = hf_model.eval()
        self.config = hf_model.config
        self.arch = self.config.model_type
        if self.arch not in _MIXERS:
            raise ModelLoadError(f"unsupported architecture {self.arch!r}; skillsoup runs 'mamba' and 'mamba2'")
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint
        self.source = source
        self._mixer = _MIXERS[self.arch]
        self.impl_name, self._ops = dispatch.resolve(impl, self.device)
        self._neutral: SkillState | None = None

    # ---- facts -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.hf.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.hf.lm_head.weight.dtype

    @property
    def num_layers(self) -> int:
        return len(self.hf.backbone.layers)

    @property
    def vocab_size(self) -> int:
        return self.hf.lm_head.weight.shape[0]

    def state_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Per-row (conv, ssm) shapes of one layer's state."""
        return self._mixer.state_shapes(self.config)

    def __repr__(self) -> str:
        return f"StateModel({self.arch}, layers={self.num_layers}, source={self.source!r}, impl={self.impl_name})"

    # ---- states ------------------------------------------------------------------------------
    def empty_state(self, batch_size: int = 1) -> SkillState:
        """The state before any token: zeros, exactly what the model starts a prompt from."""
        conv_shape, ssm_shape = self.state_shapes()
        z = lambda shape: torch.zeros(batch_size, *shape, device=self.device, dtype=torch.float32)  # noqa: E731
        return SkillState(
            conv=[z(conv_shape) for _ in range(self.num_layers)],
            ssm=[z(ssm_shape) for _ in range(self.num_layers)],
            n_tokens=[0] * batch_size,
            fingerprint=self.fingerprint,
            arch=self.arch,
        )

    def neutral_state(self) -> SkillState:
        """The state after reading only BOS (or nothing when the tokenizer has no BOS): the origin
        for task arithmetic."""
        if self._neutral is None:
            bos = getattr(self.tokenizer, "bos_token_id", None) if self.tokenizer is not None else None
            self._neutral = self.capture([bos]) if bos is not None else self.empty_state()
        return self._neutral.clone()

    def check_state(self, state: SkillState, source: str = "state", values: bool = True) -> None:
        """Raise StateMismatchError unless ``state`` was made by this model and fits it.
        ``values=False`` skips the finite-values scan (it syncs a GPU once per layer); files are
        always scanned when loaded."""
        if state.fingerprint != self.fingerprint:
            raise StateMismatchError(
                f"{source} was captured with another model (fingerprint {state.fingerprint[:12]}, this model "
                f"is {self.fingerprint[:12]}); recapture it with this model (skillsoup skills rebuild)"
            )
        conv_shape, ssm_shape = self.state_shapes()
        if state.arch != self.arch or state.num_layers != self.num_layers:
            raise StateMismatchError(
                f"{source} has {state.num_layers} {state.arch} layers, the model has {self.num_layers} {self.arch}"
            )
        if tuple(state.conv[0].shape[1:]) != conv_shape or tuple(state.ssm[0].shape[1:]) != ssm_shape:
            raise StateMismatchError(
                f"{source} has conv {tuple(state.conv[0].shape[1:])} / ssm {tuple(state.ssm[0].shape[1:])} per "
                f"row, the model needs {conv_shape} / {ssm_shape}"
            )
        validate(state, source, values=values)

    # ---- running tokens ----------------------------------------------------------------------
    def as_ids(self, tokens) -> torch.Tensor:
        """str, list[int], list[list[int]] or tensor -> LongTensor [b, l] on the model's device."""
        if isinstance(tokens, str):
            tokens = self.encode(tokens)
        ids = torch.as_tensor(tokens, dtype=torch.long, device=self.device)
        if ids.dim() == 1:
            ids = ids[None]
        if ids.dim() != 2:
            raise GenerationError(f"token ids must be [batch, length], got shape {tuple(ids.shape)}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise GenerationError(f"token ids must lie in [0, {self.vocab_size}); got {int(ids.min())}..{int(ids.max())}")
        return ids

    def _start(self, state: SkillState | None, batch_size: int) -> SkillState:
        if state is None:
            return self.empty_state(batch_size)
        self.check_state(state, values=False)  # hot path: shapes and fingerprint only
        if state.batch_size == 1 and batch_size > 1:
            state = state.expand(batch_size)
        if state.batch_size != batch_size:
            raise StateMismatchError(f"state has {state.batch_size} rows but input_ids has {batch_size}")
        return state.to(device=self.device)

    def forward(self, input_ids, state: SkillState | None = None, *, logits: str = "all"):
        """Run ``input_ids`` [b, l] starting from ``state`` (None = start of text).

        Returns (logits, new_state): logits [b, l, vocab] float32 for ``logits="all"``, [b, vocab]
        for ``"last"``, None for ``"none"``. The input state is never modified.
        """
        with torch.no_grad():
            return self.forward_with_grad(input_ids, state, logits=logits)

    def forward_with_grad(self, input_ids, state: SkillState | None = None, *, logits: str = "all"):
        """:meth:`forward` with autograd on: for training the model or tuning a state."""
        hidden, new_state = self._run(input_ids, state)
        if logits == "none":
            return None, new_state
        if logits == "last":
            hidden = hidden[:, -1]
        elif logits != "all":
            raise GenerationError(f"logits must be 'all', 'last' or 'none', got {logits!r}")
        hidden = self.hf.backbone.norm_f(hidden)
        return self.hf.lm_head(hidden.to(self.dtype)).float(), new_state

    def _run(self, input_ids, state: SkillState | None, log_decay: list | None = None):
        """Embed and run the stack in parallel -> (last hidden states [b, l, hidden], new state)."""
        ids = self.as_ids(input_ids)
        bsz, length = ids.shape
        start = self._start(state, bsz)
        if length == 0:
            raise GenerationError("forward needs at least one token")
        return self._blocks(self._mixer.forward, self.hf.backbone.embeddings(ids), start, length, log_decay)

    def _blocks(self, mixer_fn, hidden, start: SkillState, n_new: int, log_decay: list | None = None):
        """The residual stack: pre-norm, mixer (forward or step) with its layer's state, residual add.
        Returns the last hidden states and the new SkillState. ``log_decay`` (a list, forward only)
        collects each layer's total log-decay over these tokens."""
        extra = {} if log_decay is None else {"log_decay": log_decay}
        conv, ssm = [], []
        for i, layer in enumerate(self.hf.backbone.layers):
            residual = hidden.float() if layer.residual_in_fp32 else hidden
            normed = layer.norm(hidden.to(layer.norm.weight.dtype))
            out, c, s = mixer_fn(layer.mixer, normed, start.conv[i], start.ssm[i], self._ops, **extra)
            hidden = residual + out
            conv.append(c)
            ssm.append(s)
        n_tokens = [n + n_new for n in start.n_tokens]
        return hidden, SkillState(conv, ssm, n_tokens, self.fingerprint, self.arch)

    def capture(self, input_ids, state: SkillState | None = None) -> SkillState:
        """The state after reading ``input_ids`` from ``state``: what a skill stores."""
        return self.forward(input_ids, state, logits="none")[1]

    @torch.no_grad()
    def capture_with_decay(self, input_ids, state: SkillState | None = None) -> tuple[SkillState, list[torch.Tensor]]:
        """:meth:`capture` plus, per layer, the total log-decay of these tokens (A * sum dt, float32,
        <= 0): exp of it carries an SSM state from before the tokens to after them. Shapes broadcast
        against the layer's ssm state: [b, d, n] (Mamba-1), [b, h, 1, 1] (Mamba-2). For decay
        mixing; see :func:`skillsoup.states.decay.capture_chunks`."""
        log_decay: list[torch.Tensor] = []
        new_state = self._run(input_ids, state, log_decay)[1]
        return new_state, log_decay

    @torch.no_grad()
    def step(self, token_ids, state: SkillState):
        """Decode one token per row: token_ids [b] -> (logits [b, vocab], new state)."""
        ids = torch.as_tensor(token_ids, dtype=torch.long, device=self.device).reshape(-1)
        start = self._start(state, ids.shape[0])
        hidden, new_state = self._blocks(self._mixer.step, self.hf.backbone.embeddings(ids), start, 1)
        hidden = self.hf.backbone.norm_f(hidden)
        return self.hf.lm_head(hidden.to(self.dtype)).float(), new_state

    # ---- text --------------------------------------------------------------------------------
    def _need_tokenizer(self):
        if self.tokenizer is None:
            raise ModelLoadError(
                f"model {self.source!r} has no tokenizer; put tokenizer.json in its folder or pass token ids"
            )
        return self.tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self._need_tokenizer().encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self._need_tokenizer().decode(list(ids), skip_special_tokens=True)

    def generate(self, prompt, state: SkillState | None = None, **options) -> Iterator[str]:
        """Stream the continuation of ``prompt`` (text or ids) from ``state`` as text pieces.
        Options: max_new_tokens, temperature (0 = greedy), top_p, top_k, stop, seed."""
        from skillsoup.models.generation import generate_text

        return generate_text(self, prompt, state, **options)

    def generate_ids(self, prompt, state: SkillState | None = None, **options) -> Iterator[int]:
        """Stream new token ids; same options as :meth:`generate` except ``stop``."""
        from skillsoup.models.generation import generate_ids

        return generate_ids(self, prompt, state, **options)
