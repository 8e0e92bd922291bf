"""StateModel: a recurrent or hybrid causal LM whose state is a value you hold.

``forward(ids, state)`` runs any number of tokens from any state, exactly and in parallel;
``capture`` keeps only the state; ``step`` is the cheap one-token update used for decoding.
The model never sees skills or files: it takes token ids and SkillStates, and returns them.
Two backends do the work (:mod:`skillsoup.models.architectures` says which runs what):
:mod:`skillsoup.models.stack` (Mamba, Mamba-2, FalconMamba: skillsoup's own forward, Triton
kernels on CUDA) and :mod:`skillsoup.models.hybrid` (hybrids: transformers' model from a rebuilt
cache).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import torch

from skillsoup.errors import GenerationError, MixError, ModelLoadError, StateMismatchError
from skillsoup.models import dispatch
from skillsoup.models.architectures import architecture
from skillsoup.models.graphs import DecodeGraph, Graphs
from skillsoup.models.hf_cache import CacheDtypes
from skillsoup.models.hybrid import HFBackend
from skillsoup.models.stack import StackBackend
from skillsoup.states.state import SkillState, validate

log = logging.getLogger(__name__)

LOGITS = ("all", "last", "none")


class StateModel:
    """Wraps a loaded transformers causal LM of a supported architecture (see :func:`load_model`)."""

    def __init__(self, hf_model, tokenizer=None, *, fingerprint: str, source: str = "", impl: str = "auto"):
        self.hf = hf_model.eval()
        self.config = hf_model.config
        self.arch = self.config.model_type
        self.architecture = architecture(self.arch)
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint
        self.source = source
        self.impl_name, ops = dispatch.resolve(impl, self.device)
        if self.architecture.backend == "stack":
            self.backend = StackBackend(self.hf, self.architecture.mixer, ops)
            self.layout = self.architecture.layout(self.config)
            self.cache_dtypes = CacheDtypes(self.dtype, self.dtype, self.dtype)
        elif self.architecture.backend == "hf":
            self.backend = HFBackend(self.hf, self.architecture, ops)
            self.layout, self.cache_dtypes = self.backend.layout, self.backend.dtypes
        else:  # pragma: no cover - the table only names these two
            raise ModelLoadError(f"unknown backend {self.architecture.backend!r} for {self.arch}")
        self._neutral: SkillState | None = None
        # CUDA graphs (skillsoup.models.graphs): None = on for the Triton kernels on CUDA (stack
        # backend), True = also elsewhere (on CPU the same static buffers run without a graph), False = off
        self.use_graphs: bool | None = None
        self._graphs: Graphs | None = None

    @property
    def _ops(self):
        """The operator namespace the backend runs (``dispatch``'s choice; tests swap it)."""
        return self.backend.ops

    @_ops.setter
    def _ops(self, ops) -> None:
        self.backend.ops = ops

    # ---- facts -------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.hf.get_output_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.hf.get_output_embeddings().weight.dtype

    @property
    def num_layers(self) -> int:
        return self.layout.num_layers

    @property
    def vocab_size(self) -> int:
        return self.hf.get_output_embeddings().weight.shape[0]

    def state_shapes(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Per-row (conv, recurrent) shapes of one recurrent layer's state."""
        return self.layout.conv_shape, self.layout.recurrent_shape

    def state_nbytes(self, n_kv_tokens: int = 0) -> int:
        """Bytes of a one-row float32 state holding ``n_kv_tokens`` attention tokens."""
        return self.layout.nbytes(n_kv_tokens)

    def __repr__(self) -> str:
        return (f"StateModel({self.arch}, {self.layout.describe()}, backend={self.architecture.backend}, "
                f"source={self.source!r}, impl={self.impl_name})")

    # ---- states ------------------------------------------------------------------------------
    def empty_state(self, batch_size: int = 1) -> SkillState:
        """The state before any token: zeros (and no KV), exactly what the model starts a prompt from."""
        fixed = torch.zeros(self.layout.fixed_numel(batch_size), device=self.device, dtype=torch.float32)
        return SkillState.from_flat(self.layout, fixed, [0] * batch_size, self.fingerprint, self.arch)

    def neutral_state(self) -> SkillState:
        """The state after reading only BOS (or nothing when the tokenizer has no BOS): the origin
        for task arithmetic."""
        if self._neutral is None:
            bos = getattr(self.tokenizer, "bos_token_id", None) if self.tokenizer is not None else None
            self._neutral = self.capture([bos]) if bos is not None else self.empty_state()
        return self._neutral.clone()

    def check_state(self, state: SkillState, source: str = "state", values: bool = True) -> None:
        """Raise StateMismatchError unless ``state`` was made by this model and fits it.
        ``values=False`` skips the finite-values scan (it syncs a GPU); files are always scanned
        when loaded."""
        if state.fingerprint != self.fingerprint:
            raise StateMismatchError(
                f"{source} was captured with another model (fingerprint {state.fingerprint[:12]}, this model "
                f"is {self.fingerprint[:12]}); recapture it with this model (skillsoup skills rebuild)"
            )
        if state.layout != self.layout:
            raise StateMismatchError(
                f"{source} has {state.layout.describe()} (conv {state.layout.conv_shape}, recurrent "
                f"{state.layout.recurrent_shape}, kv {state.layout.kv_shape}); the model has {self.layout.describe()} "
                f"(conv {self.layout.conv_shape}, recurrent {self.layout.recurrent_shape}, kv {self.layout.kv_shape})"
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

    def _start(self, state: SkillState | None, batch_size: int, device: torch.device | None = None) -> SkillState:
        if state is None:
            return self.empty_state(batch_size)
        self.check_state(state, values=False)  # hot path: shapes and fingerprint only
        if state.batch_size == 1 and batch_size > 1:
            state = state.expand(batch_size)
        if state.batch_size != batch_size:
            raise StateMismatchError(f"state has {state.batch_size} rows but input_ids has {batch_size}")
        return state.to(device=self.device if device is None else device)

    def forward(self, input_ids, state: SkillState | None = None, *, logits: str = "all"):
        """Run ``input_ids`` [b, l] starting from ``state`` (None = start of text).

        Returns (logits, new_state): logits [b, l, vocab] float32 for ``logits="all"``, [b, vocab]
        for ``"last"``, None for ``"none"``. The input state is never modified. With CUDA graphs
        on (:meth:`graphs`), "last" and "none" replay the graph of the shortest length bucket
        that holds ``l`` tokens.
        """
        with torch.no_grad():
            graphs = self.graphs() if logits != "all" else None
            if graphs is not None:
                ids = self.as_ids(input_ids)
                if ids.shape[1]:
                    done = graphs.forward(ids, self._start(state, ids.shape[0]))
                    if done is not None:
                        return (done[0] if logits == "last" else None), done[1]
            return self.forward_with_grad(input_ids, state, logits=logits)

    def graphs(self) -> Graphs | None:
        """The model's CUDA-graph runners, when they are on (``use_graphs``; by default for the
        Triton kernels on CUDA, stack backend only, and only where padding is exact)."""
        if not self.pads_exactly:
            return None
        on_gpu_kernels = self.device.type == "cuda" and self.impl_name == "triton"
        if not (on_gpu_kernels if self.use_graphs is None else self.use_graphs):
            return None
        if self._graphs is None:
            self._graphs = Graphs(self, capture=self.device.type == "cuda")
        return None if self._graphs.failed else self._graphs

    @contextlib.contextmanager
    def decoding(self, batch_size: int = 1) -> Iterator[DecodeGraph | None]:
        """A decoder of ``batch_size`` rows lent for one generation, or None when graphs are off
        (then decode with :meth:`step`)."""
        graphs = self.graphs()
        if graphs is None:
            yield None
            return
        with graphs.decoder(batch_size) as runner:
            yield runner

    def forward_with_grad(self, input_ids, state: SkillState | None = None, *, logits: str = "all"):
        """:meth:`forward` with autograd on: for training the model or tuning a state."""
        if logits not in LOGITS:
            raise GenerationError(f"logits must be 'all', 'last' or 'none', got {logits!r}")
        ids = self.as_ids(input_ids)
        if ids.shape[1] == 0:
            raise GenerationError("forward needs at least one token")
        return self.backend.forward(ids, self._start(state, ids.shape[0]), logits)

    def capture(self, input_ids, state: SkillState | None = None) -> SkillState:
        """The state after reading ``input_ids`` from ``state``: what a skill stores."""
        return self.forward(input_ids, state, logits="none")[1]

    @property
    def pads_exactly(self) -> bool:
        """Whether padded rows are read exactly (the stack backend, with mixers that allow it): then
        :meth:`capture_many` reads many prompts of different lengths in one pass."""
        return isinstance(self.backend, StackBackend) and self.backend.pads_exactly

    def capture_many(self, prompts: Sequence[Sequence[int]], states: Sequence[SkillState]) -> SkillState:
        """:meth:`capture` of several prompts, each from its own one-row state, as one state of
        ``len(prompts)`` rows. Where padded reads are exact (the stack backend: recurrent-only
        models) the prompts are read in one padded pass, one call's fixed cost for all of them (a
        batching server admitting requests); elsewhere one by one (:meth:`capture_many_ref`).
        Rows equal one-by-one capture to rounding: a batched matmul sums in another order."""
        prompts = [list(p) for p in prompts]
        if len(prompts) != len(states) or not prompts or not all(prompts):
            raise GenerationError("capture_many needs one non-empty prompt per one-row state")
        if len(prompts) == 1 or not self.pads_exactly:
            return self.capture_many_ref(prompts, states)
        start = SkillState.cat([self._start(s, 1) for s in states])
        longest = max(len(p) for p in prompts)
        ids = torch.zeros((len(prompts), longest), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, : len(p)] = torch.as_tensor(p, dtype=torch.long)
        ids = self.as_ids(ids)  # checks the ids; the padding (0) is a valid id that is never read
        lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=self.device)
        with torch.no_grad():
            state = self.backend.forward(ids, start, "none", lengths=lengths)[1]
        # the backend counts the padded length; each row read only its own tokens
        return state.rebind(state.fixed, None, [n + len(p) for n, p in zip(start.n_tokens, prompts)])

    def capture_many_ref(self, prompts: Sequence[Sequence[int]], states: Sequence[SkillState]) -> SkillState:
        """The reference of :meth:`capture_many`: each prompt captured alone, the rows stacked."""
        if len(prompts) != len(states) or not prompts or not all(len(p) for p in prompts):
            raise GenerationError("capture_many needs one non-empty prompt per one-row state")
        return SkillState.cat([self.capture(list(p), s) for p, s in zip(prompts, states)])

    @torch.no_grad()
    def capture_with_decay(self, input_ids, state: SkillState | None = None) -> tuple[SkillState, list[torch.Tensor]]:
        """:meth:`capture` plus, per layer, the total log-decay of these tokens (A * sum dt, float32,
        <= 0): exp of it carries an SSM state from before the tokens to after them. Shapes broadcast
        against the layer's ssm state: [b, d, n] (Mamba-1), [b, h, 1, 1] (Mamba-2). For decay
        mixing (recurrent-only models); see :func:`skillsoup.models.chunks.capture_chunks`."""
        if not isinstance(self.backend, StackBackend):
            raise MixError(f"decay mixing needs a recurrent-only model (mamba, mamba2, falcon_mamba); this is a "
                           f"{self.arch} model with {self.layout.describe()}: use mix(...) instead")
        ids = self.as_ids(input_ids)
        if ids.shape[1] == 0:
            raise GenerationError("forward needs at least one token")
        log_decay: list[torch.Tensor] = []
        new_state = self.backend.forward(ids, self._start(state, ids.shape[0]), "none", log_decay)[1]
        return new_state, log_decay

    @torch.no_grad()
    def step(self, token_ids, state: SkillState):
        """Decode one token per row: token_ids [b] -> (logits [b, vocab], new state)."""
        device = self.device  # looked up once: transformers' get_output_embeddings is slow for a decode step
        ids = torch.as_tensor(token_ids, dtype=torch.long, device=device).reshape(-1)
        return self.backend.step(ids, self._start(state, ids.shape[0], device))

    @torch.no_grad()
    def step_(self, token_ids, state: SkillState):
        """:meth:`step` that may advance ``state`` in place: -> (logits, the new state), which is
        ``state`` itself where the backend writes over it (recurrent-only models, float32 states on
        the CPU: no new buffer per token; on a GPU the decode graphs do that, models/graphs.py). For
        a caller that owns ``state`` (a batching server's batch); ``state`` must not be used
        afterwards except as the returned one."""
        device = self.device
        ids = torch.as_tensor(token_ids, dtype=torch.long, device=device).reshape(-1)
        start = self._start(state, ids.shape[0], device)
        writes_over = getattr(self.backend, "step_", None)
        if (writes_over is None or start is not state or start.fixed.dtype != torch.float32  # expanded, moved
                or start.fixed.device.type != "cpu"):
            return self.backend.step(ids, start)
        return writes_over(ids, start)

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
