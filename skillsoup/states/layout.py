"""StateLayout: which kinds of state each layer of a model holds, and their shapes per batch row.

Kinds of state (shapes per batch row):
    conv        fixed size  [c, k]         the last k inputs of a layer's depthwise causal conv
    recurrent   fixed size  [d, n]         Mamba-1 selective-scan state (d channels, n = d_state)
                            [h, p, n]      Mamba-2 state (h heads of head dim p)
                            [h, dk, dv]    gated DeltaNet state (Qwen3-Next, Qwen3.5)
    kv          grows       [kvh, T, dk] keys and [kvh, T, dv] values of an attention layer after
                            T tokens, with each token's position and an additive attention bias

Kinds of layer (one per model layer, in model order):
    "recurrent"             a conv window and a recurrent state (Mamba, Mamba-2, DeltaNet mixers)
    "attention"             a KV cache
    "recurrent+attention"   both (FalconH1's parallel mixers, Zamba2's shared-attention layers)
    "none"                  no state (NemotronH's MLP / MoE layers)

All recurrent layers of one model share one conv shape and one recurrent shape, and all attention
layers one KV shape: true of every architecture skillsoup runs, and what lets a SkillState keep
each fixed-size kind of every layer in one contiguous buffer (see :mod:`skillsoup.states.state`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from skillsoup.errors import StateMismatchError

RECURRENT, ATTENTION, BOTH, NONE = "recurrent", "attention", "recurrent+attention", "none"
LAYER_KINDS = (RECURRENT, ATTENTION, BOTH, NONE)
FIXED_KINDS = ("conv", "recurrent")  # the order of the sections in the flat buffer
POSITION_BYTES, BIAS_BYTES = 8, 4  # int64 position and float32 bias kept per KV token


def _shape(value, name: str, ndim: tuple[int, ...]) -> tuple[int, ...]:
    shape = tuple(int(v) for v in value)
    if len(shape) not in ndim or any(v <= 0 for v in shape):
        raise StateMismatchError(f"state layout: {name} {shape} must be {' or '.join(map(str, ndim))} positive sizes")
    return shape


@dataclass(frozen=True)
class StateLayout:
    """What one row of a model's state holds, layer by layer."""

    layer_kinds: tuple[str, ...]
    conv_shape: tuple[int, ...] = ()  # [c, k] per row and recurrent layer
    recurrent_shape: tuple[int, ...] = ()  # per row and recurrent layer
    kv_shape: tuple[int, ...] = ()  # (kv heads, key dim, value dim) per attention layer

    def __post_init__(self) -> None:
        kinds = tuple(self.layer_kinds)
        object.__setattr__(self, "layer_kinds", kinds)
        bad = sorted({k for k in kinds if k not in LAYER_KINDS})
        if not kinds or bad:
            raise StateMismatchError(f"state layout: layer kinds must be a non-empty list of {LAYER_KINDS}, got {bad or kinds}")
        if self.recurrent_layers:
            object.__setattr__(self, "conv_shape", _shape(self.conv_shape, "conv shape", (2,)))
            object.__setattr__(self, "recurrent_shape", _shape(self.recurrent_shape, "recurrent shape", (2, 3)))
        elif self.conv_shape or self.recurrent_shape:
            raise StateMismatchError("state layout: conv / recurrent shapes given but no layer is recurrent")
        if self.attention_layers:
            object.__setattr__(self, "kv_shape", _shape(self.kv_shape, "kv shape", (3,)))
        elif self.kv_shape:
            raise StateMismatchError("state layout: a kv shape given but no layer has attention")

    @classmethod
    def recurrent_only(cls, n_layers: int, conv_shape, recurrent_shape) -> StateLayout:
        """The layout of a pure recurrent model (Mamba, Mamba-2, FalconMamba)."""
        return cls((RECURRENT,) * n_layers, tuple(conv_shape), tuple(recurrent_shape))

    # ---- which layers hold what ------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.layer_kinds)

    @cached_property  # read on every decode token: computed once (the layout is frozen)
    def recurrent_layers(self) -> tuple[int, ...]:
        """Model layer indices with a conv window and a recurrent state, in order."""
        return tuple(i for i, k in enumerate(self.layer_kinds) if k in (RECURRENT, BOTH))

    @cached_property
    def attention_layers(self) -> tuple[int, ...]:
        """Model layer indices with a KV cache, in order."""
        return tuple(i for i, k in enumerate(self.layer_kinds) if k in (ATTENTION, BOTH))

    @property
    def n_recurrent(self) -> int:
        return len(self.recurrent_layers)

    @property
    def n_attention(self) -> int:
        return len(self.attention_layers)

    @property
    def has_kv(self) -> bool:
        return bool(self.attention_layers)

    # ---- sizes -----------------------------------------------------------------------------------
    def kind_shape(self, kind: str) -> tuple[int, ...]:
        """Per-row shape of one layer of a fixed-size kind ("conv" or "recurrent")."""
        if kind not in FIXED_KINDS:
            raise StateMismatchError(f"fixed-size kinds are {FIXED_KINDS}, got {kind!r}")
        return self.conv_shape if kind == "conv" else self.recurrent_shape

    def kind_numel(self, kind: str) -> int:
        """Elements of one layer of ``kind`` for one row (0 when no layer is recurrent)."""
        return math.prod(self.kind_shape(kind)) if self.recurrent_layers else 0

    def fixed_numel(self, batch_size: int = 1) -> int:
        """Elements of the flat buffer holding every fixed-size kind of every layer."""
        return batch_size * self.n_recurrent * sum(self.kind_numel(k) for k in FIXED_KINDS)

    def section(self, kind: str, batch_size: int) -> tuple[int, tuple[int, ...]]:
        """(offset, shape) of ``kind``'s section in the flat buffer: [n_recurrent, b, *kind shape]."""
        offset = 0
        for k in FIXED_KINDS:
            if k == kind:
                return offset, (self.n_recurrent, batch_size, *self.kind_shape(k))
            offset += batch_size * self.n_recurrent * self.kind_numel(k)
        raise StateMismatchError(f"fixed-size kinds are {FIXED_KINDS}, got {kind!r}")

    def kv_numel_per_token(self) -> int:
        """Key and value elements one token adds to one row, over all attention layers."""
        if not self.attention_layers:
            return 0
        heads, key_dim, value_dim = self.kv_shape
        return self.n_attention * heads * (key_dim + value_dim)

    def nbytes(self, n_kv_tokens: int = 0, batch_size: int = 1, itemsize: int = 4) -> int:
        """Bytes of a state with ``n_kv_tokens`` attention tokens per row (float32 by default):
        the fixed-size kinds, plus per KV token its keys, values, position and bias."""
        per_token = self.kv_numel_per_token() * itemsize + (POSITION_BYTES + BIAS_BYTES if self.has_kv else 0)
        return self.fixed_numel(batch_size) * itemsize + batch_size * n_kv_tokens * per_token

    # ---- as text (file metadata) -----------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"layer_kinds": list(self.layer_kinds), "conv_shape": list(self.conv_shape),
                "recurrent_shape": list(self.recurrent_shape), "kv_shape": list(self.kv_shape)}

    @classmethod
    def from_dict(cls, d: dict) -> StateLayout:
        return cls(tuple(d["layer_kinds"]), tuple(d.get("conv_shape", ())), tuple(d.get("recurrent_shape", ())),
                   tuple(d.get("kv_shape", ())))

    def describe(self) -> str:
        """One line for messages: '6 layers: 4 recurrent, 2 attention'."""
        counts = {k: self.layer_kinds.count(k) for k in LAYER_KINDS if k in self.layer_kinds}
        return f"{self.num_layers} layers: " + ", ".join(f"{n} {k}" for k, n in counts.items())
