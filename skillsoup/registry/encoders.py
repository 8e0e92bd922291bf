"""Text encoders tuned for one registry, stored in it, and switching the registry's index to one.

A tuned encoder is a sentence-transformers folder (safetensors weights, tokenizer, pooling config)
under ``REGISTRY/encoders/VERSION/`` with a ``tuning.json`` saying what it was tuned from and on
what. The index records it as ``tuned:VERSION``, a name relative to the registry folder, so a moved
or copied registry keeps working. Only the tuned encoder the index uses is kept.

Switching the index to another encoder re-embeds every skill row and demonstration row. Order, so
that a kill at any point leaves a registry that opens and that ``skillsoup doctor`` completes:
    1. the encoder folder is complete (written under a staging name, then renamed)
    2. the skill collection records ``embedder_next`` (an interrupted switch is visible)
    3. every row gets its new vector (documents and metadata are untouched)
    4. both collections record the new ``embedder``; ``embedder_next`` goes
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
import numpy as np

from skillsoup.errors import ModelLoadError, RegistryError
from skillsoup.registry.index import DEMOS, SKILLS, skill_from_document, skill_text

log = logging.getLogger(__name__)

ENCODERS = "encoders"
PREFIX = "tuned:"
INFO = "tuning.json"
NEXT = "embedder_next"
_PAGE = 500  # rows embedded and written per Chroma call


def is_tuned(name: str | None) -> bool:
    return bool(name) and str(name).startswith(PREFIX)


def folder_of(registry_path: Path, name: str) -> Path:
    version = name[len(PREFIX):]
    if not version or "/" in version or "\\" in version or version.startswith("."):
        raise RegistryError(f"{name!r} is not a tuned encoder name (tuned:VERSION)")
    return Path(registry_path) / ENCODERS / version


def tuned_embedder(registry_path: Path, name: str):
    """The embedder of the tuned encoder ``name`` stored in the registry at ``registry_path``."""
    from skillsoup.embedding import TextEmbedder

    folder = folder_of(registry_path, name)
    if not (folder / INFO).is_file():
        raise ModelLoadError(
            f"registry {registry_path} was indexed with the tuned encoder {name!r}, but {folder} is missing or "
            "incomplete; copy the whole registry folder (encoders/ included), or run skillsoup fit --tune-encoder again"
        )
    return TextEmbedder(folder, name=name)


def info(registry_path: Path, name: str) -> dict:
    """The tuning record of a tuned encoder ({} for any other encoder)."""
    if not is_tuned(name):
        return {}
    try:
        return json.loads((folder_of(registry_path, name) / INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RegistryError(f"tuned encoder {name!r}: unreadable {INFO} ({exc}); run skillsoup fit --tune-encoder again") from None


def staging(registry_path: Path) -> Path:
    """A new, empty folder to write a candidate encoder into (deleted by :func:`discard`)."""
    root = Path(registry_path) / ENCODERS
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".staging-", dir=root))


def discard(folder: Path | None) -> None:
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def publish(registry_path: Path, staged: Path, record: dict) -> str:
    """Give a staged encoder its version (time and weights' hash), write its tuning record, and
    return its name ``tuned:VERSION``."""
    weights = staged / "model.safetensors"
    if not weights.is_file():
        raise RegistryError(f"staged encoder {staged} has no model.safetensors")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:10]
    version = f"{time.strftime('%Y%m%d-%H%M%S')}-{digest}"
    (staged / INFO).write_text(json.dumps(dict(record, version=version, sha256_prefix=digest), indent=2,
                                          sort_keys=True), encoding="utf-8")
    target = Path(registry_path) / ENCODERS / version
    staged.rename(target)
    return PREFIX + version


def pending(registry) -> str | None:
    """The encoder an interrupted switch was moving the index to, if any."""
    if not registry.index.existing():
        return None
    meta = registry.index.collection(SKILLS, create=False).metadata or {}
    return meta.get(NEXT) or None


def switch(registry, name: str) -> int:
    """Re-embed every row of a SkillRegistry's index with the encoder ``name`` and record it (the
    module docstring's steps 2-4). Returns the number of rows re-embedded. Takes the write lock.
    Collections of other vectors (the state router's) only get the new name."""
    registry.check_writable("switch its text encoder")
    embedder = tuned_embedder(registry.path, name) if is_tuned(name) else _named(name)
    with registry.lock:
        index = registry.index
        old = index.embedder_name
        client = index.client
        skills, demos = (client.get_collection(key, embedding_function=None) for key in (SKILLS, DEMOS))
        skills.modify(metadata=dict(skills.metadata or {}, **{NEXT: name}))
        rows = _reembed(skills, embedder, lambda doc: skill_text(skill_from_document(doc)), {"embedder": name})
        rows += _reembed(demos, embedder, lambda doc: doc, None)
        others = [c for c in client.list_collections() if c.name not in (SKILLS, DEMOS)]
        for col in others + [demos, skills]:  # the skill collection last: it holds the pending mark
            meta = {k: v for k, v in (col.metadata or {}).items() if k != NEXT}
            col.modify(metadata=dict(meta, embedder=name))
        index.use_embedder(name)
        registry.embedder = embedder
        _drop_unused(registry.path, keep=name)
    log.info("switched registry %s from encoder %s to %s (%d rows re-embedded)", registry.path, old, name, rows)
    return rows


def _named(name: str):
    from skillsoup.embedding import get_embedder

    return get_embedder(name)


def _reembed(col, embedder, text_of, row_meta: dict | None) -> int:
    """Every row of ``col`` gets the vector of ``text_of(its document)`` (and ``row_meta`` merged in)."""
    ids, texts, offset = [], [], 0
    while True:
        res = col.get(include=["documents"], limit=_PAGE, offset=offset)
        ids += res["ids"]
        texts += [text_of(doc or "") for doc in res["documents"] or [None] * len(res["ids"])]
        if len(res["ids"]) < _PAGE:
            break
        offset += _PAGE
    for start in range(0, len(ids), _PAGE):
        batch = ids[start : start + _PAGE]
        vectors = np.asarray(embedder.embed(texts[start : start + _PAGE]), np.float32).tolist()
        metas = [dict(row_meta) for _ in batch] if row_meta else None
        col.update(ids=batch, embeddings=vectors, metadatas=metas)
    return len(ids)


def _drop_unused(registry_path: Path, keep: str) -> None:
    root = Path(registry_path) / ENCODERS
    keep_folder = folder_of(registry_path, keep).name if is_tuned(keep) else None
    for folder in root.iterdir() if root.is_dir() else ():
        if folder.is_dir() and folder.name != keep_folder and not folder.name.startswith(".staging-"):
            shutil.rmtree(folder, ignore_errors=True)
            log.info("removed the tuned encoder %s, no longer used by the index", folder.name)
