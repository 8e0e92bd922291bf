"""CUDA graphs for the stack backend (Mamba, Mamba-2, FalconMamba): decode and short reads without
launch overhead.

On a GPU a decode step of a small recurrent model is hundreds of tiny kernels; launching them from
Python costs more than running them. A CUDA graph records the launches once and replays them in one
call. That needs fixed buffers, so each runner owns static inputs, a static state and static
outputs, and the step writes the state in place (:meth:`StackBackend.step_into`):

    DecodeGraph     one token per row for a batch of b rows (each row its own injected state):
                    ids [b] -> logits [b, vocab] and their argmax [b] (greedy runs inside the graph,
                    sampling outside on the logits). Captured once per batch size.
    SequenceGraph   a fixed length L: b rows of up to L tokens, padded; padded tokens leave the
                    state exactly as it was (``ops.padding_is_noop``), so one graph per length bucket
                    serves every shorter query exactly. For prefill (a query after an injected
                    state) and capture (a skill's demonstrations).

``capture=False`` runs the same body eagerly on the same buffers: the static-buffer logic is then
tested on CPU, where it equals :meth:`StateModel.step` / ``forward`` exactly. :class:`Graphs` (one per
model) creates runners on first use and lends each decoder to one generation at a time (two
interleaved generations never share a state buffer). Each graph has its own memory pool: in a shared
one a later graph's outputs may sit where an earlier graph keeps its temporaries, and a decoder's
logits must survive other graphs' replays until its generation reads them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Sequence

import torch

from skillsoup.errors import GenerationError, StateMismatchError
from skillsoup.states.state import SkillState

log = logging.getLogger(__name__)

BUCKETS = (4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)  # token lengths with a sequence graph


class _Runner:
    """What both runners share: the model's backend, static buffers, the capture itself."""

    def __init__(self, model, batch_size: int, capture: bool):
        self.model, self.backend, self.batch_size = model, model.backend, int(batch_size)
        self.device = model.device
        self.state = model.empty_state(self.batch_size)  # static: what the graph reads (and writes)
        self.graph: torch.cuda.CUDAGraph | None = None
        self._outputs: tuple | None = None
        self._capture = capture

    def _record(self) -> None:
        """Warm up on a side stream (kernels compile, libraries initialise), then capture."""
        with torch.no_grad():
            if not self._capture:
                return
            side = torch.cuda.Stream(self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):
                    self._body()
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):  # a private memory pool
                self._outputs = self._body()
            self.graph = graph

    def _run(self) -> tuple:
        if self.graph is not None:
            self.graph.replay()
            return self._outputs
        with torch.no_grad():
            return self._body()

    def _body(self) -> tuple:  # pragma: no cover - each runner defines it
        raise NotImplementedError

    def _take(self, state: SkillState) -> None:
        """Copy ``state`` (this batch size, this model) into the static state."""
        self.model.check_state(state, values=False)
        if state.batch_size != self.batch_size:
            raise StateMismatchError(f"this runner holds {self.batch_size} rows, the state has {state.batch_size}")
        self.state.fixed.copy_(state.fixed, non_blocking=True)


class DecodeGraph(_Runner):
    """Single-token decode over static buffers for ``batch_size`` rows."""

    def __init__(self, model, batch_size: int, capture: bool):
        super().__init__(model, batch_size, capture)
        self.ids = torch.zeros(self.batch_size, dtype=torch.long, device=self.device)
        self.n_tokens: list[int] | None = None  # None until a state is loaded
        self._record()

    def _body(self):
        logits = self.backend.step_into(self.ids, self.state)
        return logits, logits.argmax(-1)

    def load(self, state: SkillState) -> None:
        """Start every row from ``state`` (``batch_size`` rows, or one row repeated)."""
        if state.batch_size == 1 and self.batch_size > 1:
            state = state.expand(self.batch_size)
        self._take(state)
        self.n_tokens = list(state.n_tokens)

    def load_row(self, row: int, state: SkillState) -> None:
        """Put a one-row ``state`` into row ``row`` (a request joining a running batch)."""
        self.model.check_state(state, values=False)
        if state.batch_size != 1 or not 0 <= row < self.batch_size:
            raise StateMismatchError(f"load_row needs a one-row state and a row in 0..{self.batch_size - 1}")
        for kind in ("conv", "recurrent"):
            self.state.section(kind)[:, row].copy_(state.section(kind)[:, 0])
        if self.n_tokens is None:
            self.n_tokens = [0] * self.batch_size
        self.n_tokens[row] = state.n_tokens[0]

    def step(self, token_ids) -> tuple[torch.Tensor, torch.Tensor]:
        """Feed one token per row (an int for one row, a sequence, or a [b] tensor on the device) ->
        (logits [b, vocab] float32, greedy [b] int64). Both are the runner's own buffers: read or
        copy them before the next step."""
        if self.n_tokens is None:
            raise GenerationError("load a state into the decoder before stepping it")
        if isinstance(token_ids, int):
            self.ids.fill_(token_ids)
        else:
            self.ids.copy_(torch.as_tensor(token_ids, dtype=torch.long).reshape(-1), non_blocking=True)
        logits, greedy = self._run()
        self.n_tokens = [n + 1 for n in self.n_tokens]
        return logits, greedy

    def snapshot(self) -> SkillState:
        """The current state of every row, as a new SkillState (a copy)."""
        if self.n_tokens is None:
            raise GenerationError("no state is loaded into this decoder")
        return SkillState.from_flat(self.state.layout, self.state.fixed.clone(), self.n_tokens,
                                    self.state.fingerprint, self.state.arch)


class SequenceGraph(_Runner):
    """Reads up to ``length`` tokens per row from a given state, in one fixed-shape forward."""

    def __init__(self, model, batch_size: int, length: int, capture: bool):
        super().__init__(model, batch_size, capture)
        self.length = int(length)
        self.ids = torch.zeros(self.batch_size, self.length, dtype=torch.long, device=self.device)
        self.lengths = torch.full((self.batch_size,), self.length, dtype=torch.long, device=self.device)
        self._record()

    def _body(self):
        logits, state = self.backend.forward(self.ids, self.state, "last", lengths=self.lengths)
        return logits, state.fixed

    def run(self, ids: torch.Tensor, state: SkillState | None) -> tuple[torch.Tensor, SkillState]:
        """ids [b, l] (l <= length) from ``state`` (None: the start of text) -> (logits of the last
        token [b, vocab], the state after the l tokens): new tensors, like ``StateModel.forward``."""
        b, l = ids.shape
        if b != self.batch_size or not 0 < l <= self.length:
            raise GenerationError(f"this graph reads {self.batch_size} rows of 1..{self.length} tokens, got {b} x {l}")
        if state is None:
            self.state.fixed.zero_()
            n_tokens = [0] * b
        else:
            self._take(state)
            n_tokens = state.n_tokens
        self.ids[:, :l].copy_(ids)
        self.ids[:, l:].zero_()
        self.lengths.fill_(l)
        logits, fixed = self._run()
        after = SkillState.from_flat(self.state.layout, fixed.clone(), [n + l for n in n_tokens],
                                     self.state.fingerprint, self.state.arch)
        return logits.clone(), after


class Graphs:
    """A model's runners: created (and captured, when ``capture``) on first use."""

    def __init__(self, model, capture: bool, buckets: Sequence[int] = BUCKETS):
        self.model, self.capture = model, capture
        self.buckets = tuple(sorted(buckets))
        self.failed: str | None = None  # why a capture failed: the model then runs eagerly
        self._decoders: dict[int, list[DecodeGraph]] = {}
        self._sequences: dict[tuple[int, int], SequenceGraph] = {}
        self._busy: set[int] = set()
        self._lock = threading.RLock()

    def bucket(self, length: int) -> int | None:
        """The shortest bucket holding ``length`` tokens, or None when it is too long."""
        return next((b for b in self.buckets if b >= length), None)

    def sequence(self, batch_size: int, length: int) -> SequenceGraph | None:
        bucket = self.bucket(length)
        if bucket is None:
            return None
        key = (batch_size, bucket)
        with self._lock:
            if key not in self._sequences:
                log.info("capturing a %d-token sequence graph for %d rows", bucket, batch_size)
                runner = self._make(SequenceGraph, batch_size, bucket)
                if runner is None:
                    return None
                self._sequences[key] = runner
            return self._sequences[key]

    def _make(self, kind, *args):
        """A new runner, or None (and graphs off for this model, said once) when capturing fails."""
        try:
            return kind(self.model, *args, capture=self.capture)
        except Exception as exc:  # a capture error must cost speed, not the answer
            self.failed = f"{type(exc).__name__}: {exc}"
            log.warning("CUDA graph capture failed (%s); %s runs without graphs", self.failed, self.model.source)
            return None

    def forward(self, ids: torch.Tensor, state: SkillState | None):
        """(logits of the last token, state after ``ids``) through a sequence graph, or None when
        ``ids`` is longer than the largest bucket."""
        with self._lock:  # one call at a time per runner: its buffers are shared
            runner = self.sequence(*ids.shape)
            return None if runner is None else runner.run(ids, state)

    @contextlib.contextmanager
    def decoder(self, batch_size: int) -> Iterator[DecodeGraph | None]:
        """Lend a decoder of ``batch_size`` rows for one generation (another is made when all are
        lent); None when capturing one failed (then decode eagerly)."""
        with self._lock:
            runners = self._decoders.setdefault(batch_size, [])
            runner = next((r for r in runners if id(r) not in self._busy), None)
            if runner is None:
                log.info("capturing a decode graph for %d rows", batch_size)
                runner = self._make(DecodeGraph, batch_size)
                if runner is not None:
                    runners.append(runner)
            if runner is not None:
                self._busy.add(id(runner))
        try:
            yield runner
        finally:
            if runner is not None:
                with self._lock:
                    self._busy.discard(id(runner))
                    runner.n_tokens = None
