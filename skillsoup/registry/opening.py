"""Opening a registry folder: its Chroma client and the embedder its index was built with.

A folder this process may read but not write (a shared registry, a read-only mount, a folder after
``chmod -R a-w``) opens *read-only*. Chroma writes to its database even to open it ("attempt to
write a readonly database"), so the index is read from a private copy of the folder's ``chroma/``,
taken under a shared lock (a writer holding the registry lock is waited for, as writers wait for
each other) and deleted on close. State files and settings are read in place. Every write the
registry offers refuses up front with :class:`~skillsoup.errors.RegistryReadOnlyError`; derived data
that a read needs (a state for a new model, the state router's features) is computed in memory or in
the private copy, and never reaches the folder.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from skillsoup.errors import RegistryError, RegistryReadOnlyError
from skillsoup.registry.encoders import is_tuned, tuned_embedder
from skillsoup.registry.index import SkillIndex
from skillsoup.registry.lock import RegistryLock, shared_lock

log = logging.getLogger(__name__)

CHROMA = "chroma"


@dataclass
class OpenedIndex:
    index: SkillIndex
    embedder: object
    read_only: bool = False
    snapshot: Path | None = None  # the private copy of chroma/ read by a read-only registry


def is_read_only(path: Path) -> bool:
    """The registry folder exists and this process may not write it, Chroma's folder or its database.
    (Root may write anything: for root a chmod'ed folder is writable, as the kernel says.)"""
    chroma = path / CHROMA
    return any(p.exists() and not os.access(p, os.W_OK) for p in (path, chroma, chroma / "chroma.sqlite3"))


def read_only_error(path: Path, action: str) -> RegistryReadOnlyError:
    return RegistryReadOnlyError(
        f"registry {path} is read-only for this process, so it cannot {action}; reading works as it is. Make the "
        "folder writable, or copy it somewhere writable and pass --registry COPY"
    )


def open_index(path: Path, chroma_url: str | None, embedder, lock_timeout: float | None,
               read_only: bool | None = None) -> OpenedIndex:
    """The index of the registry at ``path``: a Chroma server's (``chroma_url``), a private copy of a
    read-only folder's (``read_only`` None: decided by :func:`is_read_only`), else the folder's own,
    created on first use. ``embedder``: an embedder object, a name, or None for the recorded one."""
    from skillsoup import config
    from skillsoup.embedding import get_embedder

    read_only = not chroma_url and (is_read_only(path) if read_only is None else read_only)
    snapshot = None
    if read_only:
        snapshot = _snapshot(path, lock_timeout)
        client = SkillIndex.connect(snapshot, None)
    elif chroma_url or (path / CHROMA / "chroma.sqlite3").is_file():
        client = SkillIndex.connect(path / CHROMA if not chroma_url else None, chroma_url)
    else:  # creating the index writes it: one process at a time
        with RegistryLock(path, lock_timeout):
            client = SkillIndex.connect(path / CHROMA, None)
    try:
        recorded = SkillIndex(client, "").recorded_embedder()
        if embedder is None or isinstance(embedder, (str, os.PathLike)):
            name = str(embedder) if embedder is not None else (recorded or config.default_embedder())
            embedder = tuned_embedder(path, name) if is_tuned(name) else get_embedder(name)
        if recorded and recorded != embedder.name:
            raise RegistryError(
                f"registry {path} was indexed with embedder {recorded!r}, not {embedder.name!r}; "
                "open it with that embedder or use another --registry"
            )
    except BaseException:
        SkillIndex(client, "").close()
        remove_snapshot(snapshot)
        raise
    return OpenedIndex(SkillIndex(client, embedder.name, server=bool(chroma_url)), embedder, read_only, snapshot)


def _snapshot(path: Path, lock_timeout: float | None) -> Path:
    """A private, writable copy of ``path/chroma`` (empty when there is none yet)."""
    copy = Path(tempfile.mkdtemp(prefix="skillsoup-readonly-")) / CHROMA
    source = path / CHROMA
    try:
        with shared_lock(path, lock_timeout):
            if source.is_dir():
                shutil.copytree(source, copy, copy_function=shutil.copyfile)  # contents, not read-only modes
            else:
                copy.mkdir()
    except OSError as exc:
        remove_snapshot(copy)
        raise RegistryError(f"cannot read the index of registry {path}: {exc.strerror or exc}; check the folder's "
                            "permissions") from None
    except BaseException:
        remove_snapshot(copy)
        raise
    for folder, _, _ in os.walk(copy):  # copytree copied the folders' read-only modes
        os.chmod(folder, 0o700)
    log.info("registry %s is read-only: reading a private copy of its index (%s)", path, copy)
    return copy


def remove_snapshot(snapshot: Path | None) -> None:
    if snapshot is not None:
        shutil.rmtree(snapshot.parent, ignore_errors=True)
