"""StateStore: skill states as safetensors files, one per (state hash, model fingerprint).

Layout: ``REGISTRY/states/<fingerprint[:16]>/<state_hash>.safetensors``. Files are written atomically
by ``SkillState.save`` (temp file, fsync, rename); the index records each file's sha256 (see
:func:`state_sha256`), and ``load`` checks it before ``SkillState.load``'s own checks, so a truncated,
edited or foreign file is never used.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from skillsoup.errors import RegistryError, StateFileError
from skillsoup.states.state import SkillState
from skillsoup.states.state_file import StateSummary, needs_rebuild, summarize

if TYPE_CHECKING:
    from skillsoup.models.base import StateModel

log = logging.getLogger(__name__)

SUFFIX = ".safetensors"
_HASH = re.compile(r"^[0-9a-f]{64}$")


def fp_key(fingerprint: str) -> str:
    """The short form of a model fingerprint used in folder names and metadata keys."""
    return fingerprint[:16]


@dataclass(frozen=True)
class StateFile:
    fp16: str  # fingerprint[:16], the folder name
    state_hash: str
    path: Path


class StateStore:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, state_hash: str, fingerprint: str) -> Path:
        if not _HASH.match(state_hash):
            raise RegistryError(f"state hash {state_hash!r} is not a sha256 hex digest")
        return self.root / fp_key(fingerprint) / f"{state_hash}{SUFFIX}"

    def exists(self, state_hash: str, fingerprint: str) -> bool:
        return self.path(state_hash, fingerprint).is_file()

    def put(self, state: SkillState, state_hash: str) -> str:
        """Write ``state`` (made by the model ``state.fingerprint``) atomically; return the file's sha256."""
        path = self.path(state_hash, state.fingerprint)
        state.to(device="cpu").save(path)
        return file_sha256(path)

    def load(self, state_hash: str, fingerprint: str, sha256: str, model: StateModel | None = None) -> SkillState:
        """Read a state after checking its sha256 against the index and, given ``model``, that it
        belongs to that model. Raises StateFileError / StateMismatchError, never returns a bad state."""
        path = self.path(state_hash, fingerprint)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise needs_rebuild(f"state file {path} is missing") from None
        except OSError as exc:
            raise StateFileError(f"cannot read state file {path}: {exc.strerror}") from None
        actual = state_sha256(data)
        if actual != sha256:
            raise needs_rebuild(f"state file {path} has sha256 {actual[:12]}…, the index expects {sha256[:12]}…: it "
                                "was changed or corrupted")
        state = SkillState.from_bytes(data, source=str(path), model=model)
        if state.fingerprint != fingerprint:
            raise StateFileError(f"state file {path} was made by model {state.fingerprint[:12]}, not {fingerprint[:12]}")
        return state

    def summary(self, state_hash: str, fingerprint: str) -> StateSummary | None:
        """Size and shape facts of a stored state, from its file's header; None when it is missing
        or unreadable (``doctor`` reports those)."""
        try:
            return summarize(self.path(state_hash, fingerprint))
        except StateFileError:
            return None

    def delete(self, state_hash: str, fingerprint: str) -> bool:
        path = self.path(state_hash, fingerprint)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        _remove_empty(path.parent)
        return True

    def files(self) -> Iterator[StateFile]:
        """Every completed state file (temp files excluded)."""
        if not self.root.is_dir():
            return
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for path in sorted(folder.glob(f"*{SUFFIX}")):
                stem = path.name[: -len(SUFFIX)]
                if _HASH.match(stem):
                    yield StateFile(folder.name, stem, path)

    def stray_files(self) -> list[Path]:
        """Leftovers of interrupted writes (``.NAME.XXXX.tmp``) and files that are not states."""
        if not self.root.is_dir():
            return []
        out = []
        for folder in self.root.iterdir():
            if not folder.is_dir():
                out.append(folder)
                continue
            for path in folder.iterdir():
                stem = path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else None
                if stem is None or not _HASH.match(stem):
                    out.append(path)
        return sorted(out)

    def nbytes(self) -> int:
        if not self.root.is_dir():
            return 0
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())


def state_sha256(data: bytes) -> str:
    """sha256 of a state file with its JSON header in canonical key order: safetensors writes the
    header's keys in a random order, so equal states would otherwise hash differently. Any change to
    a header value or to the tensor bytes changes it; an unparsable header is hashed as it is."""
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
    header = data[8 : 8 + n]
    try:
        header = json.dumps(json.loads(header), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        pass
    h = hashlib.sha256(data[:8])
    h.update(header)
    h.update(data[8 + n :])
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    return state_sha256(Path(path).read_bytes())


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # not empty
