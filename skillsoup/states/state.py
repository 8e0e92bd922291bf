"""SkillState: the recurrent state a Mamba model holds after reading some tokens.

This module alone defines what a state holds and how it is saved.

Glossary (shapes, without the batch dimension ``b``):
    layers  one entry per Mamba block
    conv    [c, k]     the last ``k`` inputs of the depthwise causal conv (``k`` = conv kernel width,
                       the Hugging Face convention); c = d_inner (Mamba-1) or d_inner + 2*g*n (Mamba-2)
    ssm     [d_in, n]  Mamba-1 selective-scan state (d_in channels, n = d_state)
            [h, p, n]  Mamba-2 state (h heads of head dim p)

States are float32 in memory and on disk; the model casts at its boundary.
A state file is safetensors (tensors ``conv.{i}`` / ``ssm.{i}``) with string metadata; no pickle.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from skillsoup.errors import StateFileError, StateMismatchError

log = logging.getLogger(__name__)

FORMAT = "skillsoup-state/1"
ARCHS = ("mamba", "mamba2")


@dataclass
class SkillState:
    """Per-layer conv and SSM states of a batch of ``b`` sequences, plus where they came from."""

    conv: list[torch.Tensor]  # per layer [b, c, k]
    ssm: list[torch.Tensor]  # per layer [b, d_in, n] or [b, h, p, n]
    n_tokens: list[int]  # tokens consumed, per batch row
    fingerprint: str  # StateModel.fingerprint of the model that produced it
    arch: str  # "mamba" or "mamba2"
    meta: dict[str, str] = field(default_factory=dict)  # free-form, saved with the file

    def __post_init__(self) -> None:
        if len(self.conv) != len(self.ssm):
            raise StateMismatchError(
                f"state has {len(self.conv)} conv layers but {len(self.ssm)} ssm layers; "
                "both lists need one tensor per layer"
            )
        if self.arch not in ARCHS:
            raise StateMismatchError(f"unknown state architecture {self.arch!r}; expected one of {ARCHS}")

    # ---- shape facts -------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.ssm)

    @property
    def batch_size(self) -> int:
        return self.ssm[0].shape[0] if self.ssm else 0

    @property
    def dtype(self) -> torch.dtype:
        return self.ssm[0].dtype

    @property
    def device(self) -> torch.device:
        return self.ssm[0].device

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.conv + self.ssm)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Flat name -> tensor view, the layout of the file."""
        out = {f"conv.{i}": t for i, t in enumerate(self.conv)}
        out.update({f"ssm.{i}": t for i, t in enumerate(self.ssm)})
        return out

    # ---- copies and batches ------------------------------------------------------------------
    def _like(self, conv, ssm, n_tokens=None) -> SkillState:
        return SkillState(
            conv=conv,
            ssm=ssm,
            n_tokens=list(self.n_tokens if n_tokens is None else n_tokens),
            fingerprint=self.fingerprint,
            arch=self.arch,
            meta=dict(self.meta),
        )

    def clone(self) -> SkillState:
        return self._like([t.clone() for t in self.conv], [t.clone() for t in self.ssm])

    def to(self, device=None, dtype=None) -> SkillState:
        return self._like(
            [t.to(device=device, dtype=dtype) for t in self.conv],
            [t.to(device=device, dtype=dtype) for t in self.ssm],
        )

    def rows(self, index: list[int] | slice) -> SkillState:
        """The batch rows ``index`` as a new state (copies)."""
        idx = list(range(self.batch_size))[index] if isinstance(index, slice) else list(index)
        sel = torch.tensor(idx, dtype=torch.long, device=self.device)
        return self._like(
            [t.index_select(0, sel) for t in self.conv],
            [t.index_select(0, sel) for t in self.ssm],
            [self.n_tokens[i] for i in idx],
        )

    def expand(self, batch_size: int) -> SkillState:
        """Repeat a one-row state ``batch_size`` times."""
        if self.batch_size != 1:
            raise StateMismatchError(f"expand needs a one-row state, this one has {self.batch_size} rows")
        return self._like(
            [t.expand(batch_size, *t.shape[1:]).clone() for t in self.conv],
            [t.expand(batch_size, *t.shape[1:]).clone() for t in self.ssm],
            self.n_tokens * batch_size,
        )

    @staticmethod
    def cat(states: list[SkillState]) -> SkillState:
        """Stack states of the same model along the batch dimension (rows may differ)."""
        if not states:
            raise StateMismatchError("cat needs at least one state")
        first = states[0]
        for s in states[1:]:
            check_compatible(first, s)
        return first._like(
            [torch.cat([s.conv[i] for s in states]) for i in range(first.num_layers)],
            [torch.cat([s.ssm[i] for s in states]) for i in range(first.num_layers)],
            [n for s in states for n in s.n_tokens],
        )

    # ---- files -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the state atomically (temp file, fsync, rename) as safetensors."""
        from safetensors.torch import save

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "arch": self.arch,
            "fingerprint": self.fingerprint,
            "num_layers": str(self.num_layers),
            "n_tokens": json.dumps(self.n_tokens),
            "dtype": str(self.dtype).removeprefix("torch."),
            "meta": json.dumps(self.meta, sort_keys=True),
        }
        blob = save({k: v.detach().cpu().contiguous() for k, v in self.tensors().items()}, metadata=meta)
        write_atomic(path, blob)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, model=None, device=None) -> SkillState:
        """Read a state file, checking format, layers, shapes, dtype, finite values and, when a
        model is given (a StateModel, or anything with its ``check_state``), that the state was
        made by that model."""
        path = Path(path)
        if not path.is_file():
            raise StateFileError(f"state file {path} does not exist; recompute it (skillsoup skills rebuild)")
        data = path.read_bytes()
        return cls.from_bytes(data, source=str(path), model=model, device=device)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>", model=None, device=None) -> SkillState:
        from safetensors import SafetensorError
        from safetensors.torch import load

        hint = "it is truncated or not a skillsoup state file; recompute it (skillsoup skills rebuild)"
        try:
            header_len = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + header_len])
            tensors = load(data)
        except (SafetensorError, ValueError, UnicodeDecodeError, RuntimeError) as exc:
            raise StateFileError(f"cannot read state file {source}: {hint} ({exc})") from None
        meta = header.get("__metadata__") or {}
        if meta.get("format") != FORMAT:
            raise StateFileError(f"{source} has format {meta.get('format')!r}, expected {FORMAT!r}: {hint}")
        try:
            n_layers = int(meta["num_layers"])
            state = cls(
                conv=[tensors[f"conv.{i}"] for i in range(n_layers)],
                ssm=[tensors[f"ssm.{i}"] for i in range(n_layers)],
                n_tokens=[int(n) for n in json.loads(meta["n_tokens"])],
                fingerprint=meta["fingerprint"],
                arch=meta["arch"],
                meta=json.loads(meta.get("meta", "{}")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise StateFileError(f"{source} misses entry {exc}: {hint}") from None
        if len(tensors) != 2 * n_layers:
            raise StateFileError(f"{source} holds {len(tensors)} tensors, expected {2 * n_layers}: {hint}")
        validate(state, source=source)
        if model is not None:
            model.check_state(state, source=source)
        return state.to(device=device) if device is not None else state


def validate(state: SkillState, source: str = "state", values: bool = True) -> None:
    """Internal consistency: dtypes, one batch size, same shape on every layer, and (``values``)
    finite values."""
    if state.num_layers == 0:
        raise StateMismatchError(f"{source} has no layers")
    b = state.batch_size
    if len(state.n_tokens) != b:
        raise StateMismatchError(f"{source} has {b} rows but {len(state.n_tokens)} token counts")
    ssm_ndim = 3 if state.arch == "mamba" else 4
    for i, (c, s) in enumerate(zip(state.conv, state.ssm)):
        for name, t, shape0, ndim in (("conv", c, state.conv[0].shape, 3), ("ssm", s, state.ssm[0].shape, ssm_ndim)):
            if not t.is_floating_point():
                raise StateMismatchError(f"{source}: {name}.{i} has dtype {t.dtype}, expected a float dtype")
            if t.dim() != ndim or t.shape != shape0 or t.shape[0] != b:
                raise StateMismatchError(
                    f"{source}: {name}.{i} has shape {tuple(t.shape)}, expected {tuple(shape0)} like layer 0"
                )
            if values and not torch.isfinite(t).all():
                raise StateFileError(f"{source}: {name}.{i} holds NaN or infinite values; recompute the state")


def check_compatible(a: SkillState, b: SkillState) -> None:
    """Two states can be mixed or batched: same model, same per-row shapes."""
    if a.fingerprint != b.fingerprint:
        raise StateMismatchError(
            f"states come from different models ({a.fingerprint[:12]} vs {b.fingerprint[:12]}); "
            "recapture them with one model"
        )
    if a.num_layers != b.num_layers or a.conv[0].shape[1:] != b.conv[0].shape[1:] or a.ssm[0].shape[1:] != b.ssm[0].shape[1:]:
        raise StateMismatchError("states have different layer counts or shapes; recapture them with one model")


def relative_error(got, want) -> float:
    """||got - want|| / ||want||, in float64, over one tensor or a list of tensors taken together."""
    got, want = ([got], [want]) if isinstance(got, torch.Tensor) else (list(got), list(want))
    num = sum(float((a.double() - b.double()).pow(2).sum()) for a, b in zip(got, want, strict=True))
    den = sum(float(b.double().pow(2).sum()) for b in want)
    return math.sqrt(num) / max(math.sqrt(den), 1e-30)


def relative_state_error(state: SkillState, reference: SkillState) -> float:
    """:func:`relative_error` over every conv and SSM tensor of every layer."""
    return relative_error(state.conv + state.ssm, reference.conv + reference.ssm)


def write_atomic(path: Path, blob: bytes) -> None:
    """temp file in the same folder, fsync, rename: readers see the old file or the new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        log.debug("could not fsync directory %s", path.parent)
