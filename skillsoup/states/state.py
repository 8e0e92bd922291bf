"""SkillState: everything a recurrent or hybrid model holds after reading some tokens.

This module alone defines what a state holds; :mod:`skillsoup.states.layout` names the kinds and
:mod:`skillsoup.states.state_file` reads and writes the files.

A state of ``b`` rows (shapes per kind in :mod:`skillsoup.states.layout`):
    fixed       one contiguous 1-D buffer with every fixed-size kind of every recurrent layer:
                [conv section | recurrent section], each section [n_recurrent, b, *kind shape].
                ``conv[j]`` / ``recurrent[j]`` are views of it (layer j of the recurrent layers), so
                mixing K states is one weighted sum over K flat buffers, and a state can be written
                in place (``mix(..., out=state)``).
    keys        [n_attention, b, kvh, T, dk] float   (attention layers only; T may be 0)
    values      [n_attention, b, kvh, T, dv] float
    positions   [b, T] int64    the position each KV token was read at; -1 = padding
    kv_bias     [b, T] float32  added to the attention scores of that token: 0 as captured,
                log(w) after ``mix(kv="concat")``, -inf for padding
    n_tokens    per row, tokens read = the position of the next token
``ssm`` is kept as another name of ``recurrent`` (Mamba code reads it), and ``conv`` / ``ssm``
keep working as per-layer lists for Mamba and Mamba-2 states.

States are float32 in memory and on disk unless asked otherwise; the model casts at its boundary.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from skillsoup.errors import StateMismatchError
from skillsoup.states.layout import FIXED_KINDS, RECURRENT, StateLayout
from skillsoup.states.state_file import StateParts, decode, encode, needs_rebuild, write_atomic

__all__ = ["SkillState", "check_compatible", "relative_error", "relative_state_error", "validate", "write_atomic"]

_KV = ("keys", "values", "positions", "kv_bias")
_ROW_DIM = {"keys": 1, "values": 1, "positions": 0, "kv_bias": 0}
_TOKEN_DIM = {"keys": 3, "values": 3, "positions": 1, "kv_bias": 1}


class SkillState:
    """A batch of ``b`` states of one model, fingerprinted by that model.

    ``SkillState(conv, ssm, n_tokens, fingerprint, arch)`` builds one from per-layer lists (one
    copy into the flat buffer); hybrids add ``keys=`` / ``values=`` (per attention layer
    [b, kvh, T, d], or stacked), ``positions=``, ``kv_bias=`` and ``layer_kinds=``.
    :meth:`from_flat` wraps existing buffers without a copy.
    """

    def __init__(self, conv=(), ssm=(), n_tokens=(), fingerprint: str = "", arch: str = "", meta=None, *,
                 keys=None, values=None, positions=None, kv_bias=None, layer_kinds=None):
        conv, ssm = list(conv), list(ssm)
        if len(conv) != len(ssm):
            raise StateMismatchError(f"state has {len(conv)} conv layers but {len(ssm)} ssm layers; "
                                     "both lists need one tensor per recurrent layer")
        kv = None if keys is None else [_stacked(keys), _stacked(values)]
        kinds = tuple(layer_kinds) if layer_kinds is not None else (RECURRENT,) * len(ssm)
        for name, group in (("conv", conv), ("ssm", ssm)):
            for i, t in enumerate(group):
                if t.shape != group[0].shape:
                    raise StateMismatchError(f"{name}.{i} has shape {tuple(t.shape)}, expected {tuple(group[0].shape)} "
                                             "like layer 0")
        layout = StateLayout(kinds, conv[0].shape[1:] if conv else (), ssm[0].shape[1:] if ssm else (),
                             (kv[0].shape[2], kv[0].shape[4], kv[1].shape[4]) if kv is not None else ())
        if conv:
            dtype = ssm[0].dtype
            fixed = torch.cat([t.to(dtype).reshape(-1) for t in conv] + [t.to(dtype).reshape(-1) for t in ssm])
        else:
            fixed = torch.zeros(0, device=kv[0].device if kv is not None else None)
        kv_parts = None if kv is None else {"keys": kv[0], "values": kv[1], "positions": positions, "kv_bias": kv_bias}
        self._set(layout, fixed, list(n_tokens), fingerprint, arch, meta, kv_parts)

    @classmethod
    def from_flat(cls, layout: StateLayout, fixed: torch.Tensor, n_tokens, fingerprint: str, arch: str,
                  meta=None, kv: dict | None = None) -> SkillState:
        """Wrap a flat buffer (and, for attention layers, ``kv`` = {keys, values, positions,
        kv_bias}) without copying. Shapes are checked; values are not (see :func:`validate`)."""
        state = cls.__new__(cls)
        state._set(layout, fixed, list(n_tokens), fingerprint, arch, meta, kv)
        return state

    def _set(self, layout, fixed, n_tokens, fingerprint, arch, meta, kv) -> None:
        self.layout, self.fixed, self.n_tokens = layout, fixed, [int(n) for n in n_tokens]
        self.fingerprint, self.arch, self.meta = str(fingerprint), str(arch), dict(meta or {})
        self._views: dict[str, tuple[torch.Tensor, ...]] = {}
        b = len(self.n_tokens)
        if fixed.dim() != 1 or fixed.numel() != layout.fixed_numel(b):
            raise StateMismatchError(f"flat state buffer has shape {tuple(fixed.shape)}, the layout needs "
                                     f"[{layout.fixed_numel(b)}] for {b} rows ({layout.describe()})")
        self.keys = self.values = self.positions = self.kv_bias = None
        if layout.has_kv:
            kv = dict(kv or {})
            if kv.get("keys") is None:  # no token read yet
                heads, key_dim, value_dim = layout.kv_shape
                kv = {"keys": fixed.new_zeros(layout.n_attention, b, heads, 0, key_dim),
                      "values": fixed.new_zeros(layout.n_attention, b, heads, 0, value_dim)}
            n_kv = kv["keys"].shape[3] if kv["keys"].dim() == 5 else -1
            if kv.get("positions") is None:
                kv["positions"] = torch.arange(n_kv, device=kv["keys"].device).expand(b, n_kv).clone()
            if kv.get("kv_bias") is None:
                kv["kv_bias"] = torch.zeros(b, n_kv, device=kv["keys"].device)
            self.keys, self.values, self.positions, self.kv_bias = (kv[k] for k in _KV)
            self._check_kv(b)
        elif kv and any(v is not None for v in kv.values()):
            raise StateMismatchError(f"attention tensors given, but the layout has no attention layer ({layout.describe()})")

    def _check_kv(self, b: int) -> None:
        heads, key_dim, value_dim = self.layout.kv_shape
        n_kv = self.keys.shape[3] if self.keys.dim() == 5 else -1
        want = {"keys": (self.layout.n_attention, b, heads, n_kv, key_dim),
                "values": (self.layout.n_attention, b, heads, n_kv, value_dim),
                "positions": (b, n_kv), "kv_bias": (b, n_kv)}
        for name, shape in want.items():
            got = tuple(getattr(self, name).shape)
            if got != shape or n_kv < 0:
                raise StateMismatchError(f"{name} has shape {got}, the layout needs {shape} ({self.layout.describe()})")
        if self.positions.dtype != torch.int64:
            raise StateMismatchError(f"positions must be int64, got {self.positions.dtype}")

    # ---- shape facts -------------------------------------------------------------------------
    def section(self, kind: str) -> torch.Tensor:
        """The view [n_recurrent, b, *shape] of one fixed-size kind ("conv" or "recurrent")."""
        offset, shape = self.layout.section(kind, self.batch_size)
        return self.fixed[offset : offset + math.prod(shape)].view(shape)

    def _layer_views(self, kind: str) -> tuple[torch.Tensor, ...]:
        if kind not in self._views:
            self._views[kind] = tuple(self.section(kind).unbind(0)) if self.layout.n_recurrent else ()
        return self._views[kind]

    @property
    def conv(self) -> tuple[torch.Tensor, ...]:
        """Per recurrent layer, a [b, c, k] view of the flat buffer."""
        return self._layer_views("conv")

    @property
    def recurrent(self) -> tuple[torch.Tensor, ...]:
        """Per recurrent layer, a [b, *recurrent shape] view of the flat buffer."""
        return self._layer_views("recurrent")

    ssm = recurrent  # the Mamba name of the recurrent kind

    @property
    def num_layers(self) -> int:
        """Layers of the model (of every kind)."""
        return self.layout.num_layers

    @property
    def batch_size(self) -> int:
        return len(self.n_tokens)

    @property
    def dtype(self) -> torch.dtype:
        return self.fixed.dtype if self.fixed.numel() or self.keys is None else self.keys.dtype

    @property
    def device(self) -> torch.device:
        return self.fixed.device

    @property
    def n_kv_tokens(self) -> int:
        """Attention tokens held per row (padding included); 0 without attention layers."""
        return self.keys.shape[3] if self.keys is not None else 0

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())

    def tensors(self) -> dict[str, torch.Tensor]:
        """Name -> tensor, the layout of a format-2 file."""
        out = {"fixed": self.fixed}
        if self.keys is not None:
            out.update({k: getattr(self, k) for k in _KV})
        return out

    def rebind(self, fixed: torch.Tensor, kv: dict | None, n_tokens, meta=None) -> SkillState:
        """Point this state at new buffers in place (shapes checked): how ``mix(..., out=state)``
        hands back a preallocated state."""
        self._set(self.layout, fixed, list(n_tokens), self.fingerprint, self.arch, meta, kv)
        return self

    def _kv(self) -> dict | None:
        return {k: getattr(self, k) for k in _KV} if self.keys is not None else None

    # ---- copies and batches ------------------------------------------------------------------
    def _like(self, fixed, kv=None, n_tokens=None) -> SkillState:
        return SkillState.from_flat(self.layout, fixed, self.n_tokens if n_tokens is None else n_tokens,
                                    self.fingerprint, self.arch, self.meta, kv)

    def _map_sections(self, fn) -> torch.Tensor:
        """A new flat buffer from ``fn`` applied to each section [n_recurrent, b, ...]."""
        if not self.layout.n_recurrent:
            return self.fixed.clone()
        return torch.cat([fn(self.section(kind)).reshape(-1) for kind in FIXED_KINDS])

    def clone(self) -> SkillState:
        kv = self._kv()
        return self._like(self.fixed.clone(), kv and {k: v.clone() for k, v in kv.items()})

    def to(self, device=None, dtype=None) -> SkillState:
        """A copy on ``device`` with float kinds (fixed, keys, values) in ``dtype``; positions stay
        int64 and the bias float32. Returns ``self`` when nothing changes."""
        kv = self._kv()
        fixed = self.fixed.to(device=device, dtype=dtype)
        if kv is not None:
            kv = {k: v.to(device=device, dtype=dtype if k in ("keys", "values") else None) for k, v in kv.items()}
            if fixed is self.fixed and all(kv[k] is getattr(self, k) for k in _KV):
                return self
        elif fixed is self.fixed:
            return self
        return self._like(fixed, kv)

    def rows(self, index: list[int] | slice) -> SkillState:
        """The batch rows ``index`` as a new state (copies). KV tokens that are padding in every
        chosen row are dropped."""
        idx = list(range(self.batch_size))[index] if isinstance(index, slice) else list(index)
        sel = torch.tensor(idx, dtype=torch.long, device=self.device)
        kv = self._kv()
        if kv is not None:
            kv = {k: v.index_select(_ROW_DIM[k], sel.to(v.device)) for k, v in kv.items()}
            keep = ~torch.isneginf(kv["kv_bias"]).all(0)  # [T]
            if not bool(keep.all()):
                cols = keep.nonzero().squeeze(1)
                kv = {k: v.index_select(_TOKEN_DIM[k], cols) for k, v in kv.items()}
        return self._like(self._map_sections(lambda s: s.index_select(1, sel)), kv, [self.n_tokens[i] for i in idx])

    def expand(self, batch_size: int) -> SkillState:
        """Repeat a one-row state ``batch_size`` times."""
        if self.batch_size != 1:
            raise StateMismatchError(f"expand needs a one-row state, this one has {self.batch_size} rows")
        kv = self._kv()
        if kv is not None:
            kv = {k: v.expand(*(batch_size if d == _ROW_DIM[k] else -1 for d in range(v.dim()))).clone()
                  for k, v in kv.items()}
        fixed = self._map_sections(lambda s: s.expand(s.shape[0], batch_size, *s.shape[2:]))
        return self._like(fixed, kv, self.n_tokens * batch_size)

    @staticmethod
    def cat(states: list[SkillState]) -> SkillState:
        """Stack states of one model along the batch dimension. States of hybrid models may hold
        different numbers of KV tokens: shorter rows are padded at the end with zero keys and
        values, position -1 and bias -inf, which attention ignores exactly."""
        if not states:
            raise StateMismatchError("cat needs at least one state")
        first = states[0]
        for s in states[1:]:
            check_compatible(first, s)
        if first.layout.n_recurrent:
            fixed = torch.cat([torch.cat([s.section(kind) for s in states], dim=1).reshape(-1) for kind in FIXED_KINDS])
        else:
            fixed = torch.cat([s.fixed for s in states])
        kv = None
        if first.keys is not None:
            n_kv = max(s.n_kv_tokens for s in states)
            pads = [n_kv - s.n_kv_tokens for s in states]
            kv = {
                "keys": torch.cat([F.pad(s.keys, (0, 0, 0, p)) for s, p in zip(states, pads)], dim=1),
                "values": torch.cat([F.pad(s.values, (0, 0, 0, p)) for s, p in zip(states, pads)], dim=1),
                "positions": torch.cat([F.pad(s.positions, (0, p), value=-1) for s, p in zip(states, pads)]),
                "kv_bias": torch.cat([F.pad(s.kv_bias, (0, p), value=-math.inf) for s, p in zip(states, pads)]),
            }
        return first._like(fixed, kv, [n for s in states for n in s.n_tokens])

    # ---- files -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write the state atomically (temp file, fsync, rename) as a format-2 safetensors file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        parts = StateParts(self.layout, self.fixed, self.n_tokens, self.fingerprint, self.arch, self.meta,
                           {k: v for k, v in self.tensors().items() if k != "fixed"})
        write_atomic(path, encode(parts, self.dtype))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, model=None, device=None) -> SkillState:
        """Read a state file, checking format, layout, shapes, dtype, finite values and, when a
        model is given (a StateModel, or anything with its ``check_state``), that the state was
        made by that model. Files of format 1 (Mamba states written before hybrids) still load."""
        path = Path(path)
        if not path.is_file():
            raise needs_rebuild(f"state file {path} does not exist")
        return cls.from_bytes(path.read_bytes(), source=str(path), model=model, device=device)

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>", model=None, device=None) -> SkillState:
        parts = decode(data, source)
        try:
            state = cls.from_flat(parts.layout, parts.fixed, parts.n_tokens, parts.fingerprint, parts.arch,
                                  parts.meta, parts.kv or None)
        except StateMismatchError as exc:
            raise needs_rebuild(f"{source}: {exc}") from None
        validate(state, source=source)
        if model is not None:
            model.check_state(state, source=source)
        return state.to(device=device) if device is not None else state


def _stacked(tensors) -> torch.Tensor:
    return tensors if isinstance(tensors, torch.Tensor) else torch.stack(list(tensors))


def validate(state: SkillState, source: str = "state", values: bool = True) -> None:
    """What construction does not check: float dtypes and, with ``values``, sane KV positions and
    finite values (the bias may hold -inf for padding, never NaN or +inf; one device sync each)."""
    if state.num_layers == 0 or state.batch_size == 0:
        raise StateMismatchError(f"{source} has no layers or no rows")
    float_parts = [("fixed", state.fixed)] + ([("keys", state.keys), ("values", state.values), ("kv_bias", state.kv_bias)]
                                              if state.keys is not None else [])
    for name, t in float_parts:
        if not t.is_floating_point():
            raise StateMismatchError(f"{source}: {name} has dtype {t.dtype}, expected a float dtype")
    if not values:  # the hot path: no device sync
        return
    if state.positions is not None and state.positions.numel():
        limit = torch.tensor(state.n_tokens, device=state.positions.device)[:, None]
        if bool(((state.positions < -1) | (state.positions >= limit)).any()):
            raise StateMismatchError(f"{source}: KV positions must lie in [-1, n_tokens); recapture the state")
    if not bool(torch.isfinite(state.fixed).all()):
        raise needs_rebuild(f"{source}: {_first_bad_layer(state)} holds NaN or infinite values")
    if state.keys is not None:
        bias = state.kv_bias
        if not (bool(torch.isfinite(state.keys).all()) and bool(torch.isfinite(state.values).all())
                and not bool((torch.isnan(bias) | torch.isposinf(bias)).any())):
            raise needs_rebuild(f"{source}: the attention KV holds NaN or infinite values")


def _first_bad_layer(state: SkillState) -> str:
    layers = state.layout.recurrent_layers
    for kind in FIXED_KINDS:
        bad = ~torch.isfinite(state.section(kind)).flatten(1).all(1)
        if bool(bad.any()):
            j = int(bad.nonzero()[0])
            return f"the {kind} state of layer {layers[j]} ({'conv' if kind == 'conv' else 'ssm'}.{j})"
    return "the state"


def check_compatible(a: SkillState, b: SkillState) -> None:
    """Two states can be mixed or batched: same model, same layout (KV lengths may differ)."""
    if a.fingerprint != b.fingerprint:
        raise StateMismatchError(
            f"states come from different models ({a.fingerprint[:12]} vs {b.fingerprint[:12]}); "
            "recapture them with one model"
        )
    if a.layout != b.layout:
        raise StateMismatchError(f"states have different layouts ({a.layout.describe()}, shapes {a.layout.conv_shape}/"
                                 f"{a.layout.recurrent_shape} vs {b.layout.describe()}, {b.layout.conv_shape}/"
                                 f"{b.layout.recurrent_shape}); recapture them with one model")


def relative_error(got, want) -> float:
    """||got - want|| / ||want||, in float64, over one tensor or a list of tensors taken together."""
    got, want = ([got], [want]) if isinstance(got, torch.Tensor) else (list(got), list(want))
    num = sum(float((a.double() - b.double()).pow(2).sum()) for a, b in zip(got, want, strict=True))
    den = sum(float(b.double().pow(2).sum()) for b in want)
    return math.sqrt(num) / max(math.sqrt(den), 1e-30)


def relative_state_error(state: SkillState, reference: SkillState) -> float:
    """:func:`relative_error` over every tensor of the states (fixed kinds and KV); KV of
    different lengths cannot be compared and raise StateMismatchError."""
    check_compatible(state, reference)
    if state.n_kv_tokens != reference.n_kv_tokens:
        raise StateMismatchError(f"states hold {state.n_kv_tokens} and {reference.n_kv_tokens} KV tokens; "
                                 "compare states of equal length")
    parts = ["fixed"] + (["keys", "values"] if state.keys is not None else [])
    return relative_error([getattr(state, p) for p in parts], [getattr(reference, p) for p in parts])
