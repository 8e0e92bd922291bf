"""State files: safetensors with string metadata, no pickle; writing is atomic.

Formats (the ``format`` metadata entry):
    skillsoup-state/2   tensors ``fixed`` (every fixed-size kind of every layer, one flat buffer:
                        see :mod:`skillsoup.states.state`) and, for models with attention layers,
                        ``keys``, ``values``, ``positions``, ``kv_bias``; the layout as JSON
    skillsoup-state/1   written before hybrid models: tensors ``conv.{i}`` / ``ssm.{i}`` per layer of
                        a Mamba / Mamba-2 model. Still read; written no more.
Anything else fails with a StateFileError that names ``skillsoup skills rebuild``.

This module knows bytes and tensors only; :class:`skillsoup.states.state.SkillState` builds itself
from :func:`decode`'s result.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from skillsoup.errors import StateFileError, StateMismatchError
from skillsoup.states.layout import StateLayout

log = logging.getLogger(__name__)

FORMAT = "skillsoup-state/2"
FORMAT_V1 = "skillsoup-state/1"
V1_ARCHS = ("mamba", "mamba2")
KV_TENSORS = ("keys", "values", "positions", "kv_bias")
REBUILD = "recompute it (skillsoup skills rebuild)"


def needs_rebuild(problem: str) -> StateFileError:
    """The error for a state file that cannot be used: the problem, then how to recompute it."""
    return StateFileError(f"{problem}; {REBUILD}", problem)


@dataclass
class StateParts:
    """What a state file holds, before it becomes a SkillState."""

    layout: StateLayout
    fixed: torch.Tensor
    n_tokens: list[int]
    fingerprint: str
    arch: str
    meta: dict[str, str] = field(default_factory=dict)
    kv: dict[str, torch.Tensor] = field(default_factory=dict)  # keys, values, positions, kv_bias


def encode(parts: StateParts, dtype: torch.dtype) -> bytes:
    """The bytes of a format-2 state file."""
    from safetensors.torch import save

    meta = {
        "format": FORMAT,
        "arch": parts.arch,
        "fingerprint": parts.fingerprint,
        "layout": json.dumps(parts.layout.to_dict(), sort_keys=True),
        "n_tokens": json.dumps(parts.n_tokens),
        "dtype": str(dtype).removeprefix("torch."),
        "meta": json.dumps(parts.meta, sort_keys=True),
    }
    tensors = {"fixed": parts.fixed, **parts.kv}
    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=meta)


def decode(data: bytes, source: str) -> StateParts:
    """Read a format-2 or format-1 state file; StateFileError for anything else."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    hint = "it is truncated or not a skillsoup state file"
    try:
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        tensors = load(data)
    except (SafetensorError, ValueError, UnicodeDecodeError, RuntimeError) as exc:
        raise needs_rebuild(f"cannot read state file {source}: {hint} ({exc})") from None
    meta = header.get("__metadata__") or {}
    version = meta.get("format")
    try:
        if version == FORMAT:
            return _decode_v2(tensors, meta, source)
        if version == FORMAT_V1:
            return _decode_v1(tensors, meta, source)
    except (KeyError, ValueError, TypeError) as exc:
        raise needs_rebuild(f"{source} misses or garbles entry {exc}: {hint}") from None
    raise needs_rebuild(f"{source} has format {version!r}; this skillsoup reads {FORMAT!r} and {FORMAT_V1!r}")


def _common(meta: dict) -> dict:
    return {"n_tokens": [int(n) for n in json.loads(meta["n_tokens"])], "fingerprint": str(meta["fingerprint"]),
            "arch": str(meta["arch"]), "meta": {str(k): str(v) for k, v in json.loads(meta.get("meta", "{}")).items()}}


def _decode_v2(tensors: dict, meta: dict, source: str) -> StateParts:
    layout = StateLayout.from_dict(json.loads(meta["layout"]))
    expected = {"fixed", *(KV_TENSORS if layout.has_kv else ())}
    if set(tensors) != expected:
        raise needs_rebuild(f"{source} holds tensors {sorted(tensors)}, expected {sorted(expected)}")
    return StateParts(layout, tensors["fixed"], kv={k: tensors[k] for k in KV_TENSORS if k in tensors}, **_common(meta))


def _decode_v1(tensors: dict, meta: dict, source: str) -> StateParts:
    """Format 1: one ``conv.{i}`` [b, c, k] and one ``ssm.{i}`` per layer of a pure Mamba model."""
    n_layers = int(meta["num_layers"])
    common = _common(meta)
    if common["arch"] not in V1_ARCHS:
        raise needs_rebuild(f"{source} is a format-1 state of unknown architecture {common['arch']!r}")
    if len(tensors) != 2 * n_layers or n_layers < 1:
        raise needs_rebuild(f"{source} holds {len(tensors)} tensors, expected {2 * n_layers}")
    conv = [tensors[f"conv.{i}"] for i in range(n_layers)]
    ssm = [tensors[f"ssm.{i}"] for i in range(n_layers)]
    for name, group in (("conv", conv), ("ssm", ssm)):
        for i, t in enumerate(group):
            if t.shape != group[0].shape or t.dim() < 3:
                raise needs_rebuild(f"{source}: {name}.{i} has shape {tuple(t.shape)}, expected "
                                    f"{tuple(group[0].shape)} like layer 0")
    layout = StateLayout.recurrent_only(n_layers, conv[0].shape[1:], ssm[0].shape[1:])
    # the flat buffer is [conv of every layer | ssm of every layer], each [layers, b, ...]
    fixed = torch.cat([t.reshape(-1) for t in conv] + [t.to(conv[0].dtype).reshape(-1) for t in ssm])
    log.debug("read format-1 state %s (%d layers)", source, n_layers)
    return StateParts(layout, fixed, **common)


@dataclass(frozen=True)
class StateSummary:
    """What ``skills show`` reports of a state file, from its header alone."""

    format: str
    arch: str
    nbytes: int  # bytes of its tensors: the state's size in memory
    n_tokens: list[int]
    n_kv_tokens: int  # attention tokens per row (0 without attention layers)
    layers: str  # e.g. "6 layers: 4 recurrent, 2 attention"


def summarize(path: str | os.PathLike) -> StateSummary:
    """Read a state file's header (not its tensors); StateFileError when it is not one."""
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(header_len))
        meta = header.pop("__metadata__", None) or {}
        nbytes = sum(int(t["data_offsets"][1]) - int(t["data_offsets"][0]) for t in header.values())
        if meta.get("format") == FORMAT:
            layers = StateLayout.from_dict(json.loads(meta["layout"])).describe()
        else:
            layers = f"{int(meta['num_layers'])} layers: {int(meta['num_layers'])} recurrent"
        keys = header.get("keys")
        return StateSummary(str(meta["format"]), str(meta["arch"]), nbytes, [int(n) for n in json.loads(meta["n_tokens"])],
                            int(keys["shape"][3]) if keys else 0, layers)
    except (OSError, ValueError, KeyError, TypeError, StateMismatchError) as exc:
        raise needs_rebuild(f"cannot read the header of state file {path}: {exc}") from None


def _read_umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


_UMASK = _read_umask()  # once, at import: setting it per write would race with other threads' files


def write_atomic(path: Path, blob: bytes) -> None:
    """temp file in the same folder, fsync, rename: readers see the old file or the new one. The file
    gets the mode a plain open() would (0666 less the umask), not mkstemp's 0600: registries are
    shared read-only with other users."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
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
