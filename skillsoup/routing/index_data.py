"""The registry's index as numpy matrices, for fitting (all rows) and for the classifier (the
demonstrations of skills added after a fit). Only rows of committed skill versions are read."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skillsoup.errors import RegistryError
from skillsoup.registry.index import DEMOS, SKILLS, skill_text

_PAGE = 1000


def _pages(col, include: list[str], where: dict | None = None):
    offset = 0
    while True:
        res = col.get(include=include, where=where, limit=_PAGE, offset=offset)
        yield res
        if len(res["ids"]) < _PAGE:
            return
        offset += _PAGE


def skill_hashes(registry) -> dict[str, str]:
    """name -> content_hash[:12] of every committed skill."""
    return {name: str(m.get("content_hash", ""))[:12] for name, m in registry.index.skill_metadata().items()}


def index_matrices(registry) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(demo skill names [D], demo embeddings [D, dim], skill names [S], skill-row embeddings [S, dim])
    of committed skills (demonstration rows of other content hashes are skipped, as in queries)."""
    meta = registry.index.skill_metadata()
    if not meta:
        raise RegistryError(f"registry {registry.path} has no skills; add some before fitting the router")
    demo_names, demo_vecs, skill_names, skill_vecs = [], [], [], []
    for res in _pages(registry.index.collection(DEMOS, create=False), ["embeddings", "metadatas"]):
        for m, e in zip(res["metadatas"], res["embeddings"]):
            name = (m or {}).get("skill")
            if name in meta and meta[name].get("content_hash") == m.get("content_hash"):
                demo_names.append(name)
                demo_vecs.append(np.asarray(e, np.float32))
    for res in _pages(registry.index.collection(SKILLS, create=False), ["embeddings"]):
        skill_names += list(res["ids"])
        skill_vecs += [np.asarray(e, np.float32) for e in res["embeddings"]]
    dim = len(skill_vecs[0]) if skill_vecs else 0
    demos = np.stack(demo_vecs) if demo_vecs else np.zeros((0, dim), np.float32)
    return np.array(demo_names, dtype=object), demos, np.array(skill_names, dtype=object), np.stack(skill_vecs)


def encoded_matrices(registry, encoder) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`index_matrices` with another encoder: the same rows (committed skills' demonstrations
    and skill rows, from the same texts the registry embeds), embedded in memory."""
    rows = registry.index.get_skills()
    if not rows:
        raise RegistryError(f"registry {registry.path} has no skills; add some before fitting the router")
    names = sorted(rows)
    demo_names = [n for n in names for _ in rows[n].skill.demonstrations]
    texts = [skill_text(rows[n].skill) for n in names] + [d.input for n in names for d in rows[n].skill.demonstrations]
    vectors = np.asarray(encoder.embed(texts), np.float32)
    return np.array(demo_names, dtype=object), vectors[len(names):], np.array(names, dtype=object), vectors[:len(names)]


def demo_vectors(registry, names: Sequence[str]) -> dict[str, np.ndarray]:
    """name -> [n, dim] demonstration embeddings of the current version of each named skill."""
    names = list(names)
    if not names:
        return {}
    hashes = {n: m.get("content_hash") for n, m in registry.index.skill_metadata(names).items()}
    out: dict[str, list] = {}
    col = registry.index.collection(DEMOS, create=False)
    for res in _pages(col, ["embeddings", "metadatas"], where={"skill": {"$in": names}}):
        for m, e in zip(res["metadatas"], res["embeddings"]):
            name = (m or {}).get("skill")
            if name in hashes and m.get("content_hash") == hashes[name]:
                out.setdefault(name, []).append(np.asarray(e, np.float32))
    return {n: np.stack(v) for n, v in out.items()}


def retrieve_all(queries: np.ndarray, names: np.ndarray, vectors: np.ndarray, n: int) -> list[list[tuple[str, float]]]:
    """The ``n`` nearest rows (cosine; rows are unit vectors) of each query, best first."""
    out = []
    n = min(n, len(names))
    if n == 0:
        return [[] for _ in queries]
    for start in range(0, len(queries), 256):
        sims = queries[start : start + 256] @ vectors.T  # [q, rows]
        top = np.argpartition(-sims, n - 1, axis=1)[:, :n]
        for row, idx in zip(sims, top):
            idx = idx[np.argsort(-row[idx], kind="stable")]
            out.append([(str(names[i]), float(row[i])) for i in idx])
    return out
