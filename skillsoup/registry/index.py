"""SkillIndex: the registry's Chroma collections. Chroma never embeds text: every collection is
created with ``embedding_function=None`` and every write and query passes embeddings.

Collections (cosine space):
    skills          one row per skill. id = name; document = the skill as JSON (the source of truth
                    for its content); metadata: content_hash, state_hash, n_demos, embedder and, per
                    model, ``fp_<fp16>`` (the full fingerprint) and ``sha_<fp16>`` (its state file's
                    sha256). The row's presence is the commit mark of an add. A composite skill's
                    row adds ``recipe`` (JSON) and its state_hash is the recipe's (registry/composite.py).
    demonstrations  one row per demonstration. id = ``{name}:{content_hash[:12]}:{i}``; embedding of its
                    input; document = the input; metadata: skill, content_hash, index.
The router adds a ``skill_states`` collection through :meth:`collection`. Every collection records
the text encoder of the index (``embedder``); registry/encoders.py switches it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skillsoup.errors import RegistryError
from skillsoup.registry.recent import RecentRows, writes_skill_rows
from skillsoup.skills.skill import Demonstration, Skill

log = logging.getLogger(__name__)

SKILLS = "skills"
DEMOS = "demonstrations"
_PAGE = 1000  # rows per get() page and per write batch (below Chroma's max batch size)


@dataclass
class SkillRow:
    """One row of the ``skills`` collection, decoded."""

    name: str
    skill: Skill
    content_hash: str
    state_hash: str
    n_demos: int
    states: dict[str, tuple[str, str]] = field(default_factory=dict)  # fp16 -> (fingerprint, sha256)
    metadata: dict = field(default_factory=dict)

    @property
    def is_composite(self) -> bool:
        """A mix of other skills' states (registry/composite.py), not a capture of its demonstrations."""
        return self.metadata.get("recipe") is not None


class _Missing(RegistryError):
    """A collection does not exist yet."""


def skill_document(skill: Skill) -> str:
    doc = dict(skill.content_dict(), source=skill.source)
    return json.dumps(doc, ensure_ascii=False, sort_keys=True)


def skill_from_document(document: str) -> Skill:
    try:
        d = json.loads(document)
        return Skill(
            name=d["name"],
            description=d["description"],
            demonstrations=tuple(Demonstration(i, o) for i, o in d["demonstrations"]),
            template=d["template"],
            tags=tuple(d.get("tags", ())),
            tests=tuple(Demonstration(i, o) for i, o in d.get("tests", ())),
            source=d.get("source", ""),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"a skill row in the index is unreadable ({exc}); run skillsoup doctor") from None


def skill_text(skill: Skill, max_inputs: int = 20) -> str:
    """What a skill row's embedding is computed from: name, description and some inputs."""
    inputs = "\n".join(d.input for d in skill.demonstrations[:max_inputs])
    return f"{skill.name.replace('-', ' ').replace('_', ' ')}: {skill.description}\n{inputs}"


def demo_id(name: str, content_hash: str, index: int) -> str:
    return f"{name}:{content_hash[:12]}:{index}"


def _vectors(embeddings: np.ndarray) -> list[list[float]]:
    return np.asarray(embeddings, dtype=np.float32).tolist()


class SkillIndex:
    """Thin, typed wrapper over the Chroma client; knows nothing about models or files."""

    def __init__(self, client, embedder_name: str, server: bool = False):
        self.client = client
        self.server = server
        self.embedder_name = embedder_name
        self._cols: dict[str, object] = {}
        self.recent = RecentRows()  # skill rows read lately (recent_skills); every write below outdates them

    # ---- opening ---------------------------------------------------------------------------
    @staticmethod
    def connect(path: Path | None = None, chroma_url: str | None = None):
        """A Chroma client: a server at ``chroma_url``, else embedded under ``path``."""
        import chromadb
        from chromadb.config import Settings

        settings = Settings(anonymized_telemetry=False)
        if chroma_url:
            from urllib.parse import urlparse

            url = urlparse(chroma_url if "://" in chroma_url else f"http://{chroma_url}")
            if url.scheme not in ("http", "https") or not url.hostname:
                raise RegistryError(f"--chroma-url {chroma_url!r} is not an http(s)://HOST:PORT address")
            port = url.port or (443 if url.scheme == "https" else 8000)
            host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname  # an IPv6 address keeps its brackets
            address = f"{url.scheme}://{host}:{port}"  # what a bare "host" or "host:port" was read as
            try:
                return chromadb.HttpClient(host=host, port=port, ssl=url.scheme == "https", settings=settings)
            except Exception as exc:  # chromadb raises bare ValueError/ConnectionError subclasses
                why = "" if "could not connect" in str(exc).lower() else f" ({exc})"  # its generic line says no more
                raise RegistryError(f"cannot reach a Chroma server at {address}{why}; start one with `chroma run "
                                    f"--path DIR --port {port}` or give --chroma-url http://HOST:PORT") from None
        assert path is not None
        os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
        try:
            path.mkdir(parents=True, exist_ok=True)
            return chromadb.PersistentClient(path=str(path), settings=settings)
        except Exception as exc:
            raise RegistryError(f"cannot open the Chroma index in {path}: {exc}; run skillsoup doctor") from None

    def use_embedder(self, name: str) -> None:
        """The index now holds vectors of encoder ``name`` (registry/encoders.py): read collections afresh."""
        self.embedder_name, self._cols = name, {}
        self.recent.bump()

    def existing(self) -> bool:
        """Whether the collections exist (a fresh registry has none until the first write)."""
        try:
            self.collection(SKILLS, create=False)
            self.collection(DEMOS, create=False)
            return True
        except _Missing:
            return False

    def recorded_embedder(self) -> str | None:
        from chromadb.errors import NotFoundError

        try:
            col = self.client.get_collection(SKILLS, embedding_function=None)
        except (NotFoundError, ValueError):
            return None
        return (col.metadata or {}).get("embedder")

    def collection(self, name: str, create: bool = True, metadata: dict | None = None):
        """A cosine-space collection without an embedding function (creating it needs the write lock)."""
        if name in self._cols:
            return self._cols[name]
        from chromadb.errors import NotFoundError

        try:
            col = self.client.get_collection(name, embedding_function=None)
        except (NotFoundError, ValueError):
            if not create:
                raise _Missing(f"the registry has no {name!r} collection yet") from None
            meta = {"embedder": self.embedder_name, **(metadata or {})}
            col = self.client.get_or_create_collection(
                name, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}, metadata=meta
            )
        recorded = (col.metadata or {}).get("embedder")
        if recorded and recorded != self.embedder_name:
            raise RegistryError(
                f"the registry's {name!r} collection was embedded with {recorded!r}, not {self.embedder_name!r}; "
                "open it with the same embedder or use another --registry"
            )
        self._cols[name] = col
        return col

    @property
    def skills(self):
        return self.collection(SKILLS)

    @property
    def demos(self):
        return self.collection(DEMOS)

    # ---- skill rows ------------------------------------------------------------------------
    def _decode(self, rid: str, document: str, meta: dict) -> SkillRow:
        states = {}
        for key, value in meta.items():
            if key.startswith("fp_"):
                fp16 = key[3:]
                sha = meta.get(f"sha_{fp16}")
                if isinstance(sha, str):
                    states[fp16] = (str(value), sha)
        return SkillRow(
            name=rid,
            skill=skill_from_document(document),
            content_hash=str(meta.get("content_hash", "")),
            state_hash=str(meta.get("state_hash", "")),
            n_demos=int(meta.get("n_demos", 0)),
            states=states,
            metadata=dict(meta),
        )

    def get_skills(self, names: Sequence[str] | None = None) -> dict[str, SkillRow]:
        """Committed skills (all, or those of ``names`` that exist), by name."""
        if not self.existing():
            return {}
        out = {}
        for rid, doc, meta in self._rows(self.skills, ids=list(names) if names is not None else None, documents=True):
            out[rid] = self._decode(rid, doc, meta or {})
        return out

    def recent_skills(self, names: Sequence[str], max_age: float) -> dict[str, SkillRow]:
        """:meth:`get_skills` of ``names`` from rows read at most ``max_age`` s ago (registry/recent.py)."""
        return self.recent.get(names, max_age, self.get_skills)

    def skill_metadata(self, names: Sequence[str] | None = None) -> dict[str, dict]:
        """Metadata only (cheaper than decoding documents), by name."""
        if not self.existing():
            return {}
        return {rid: meta or {} for rid, _, meta in self._rows(self.skills, ids=list(names) if names is not None else None)}

    @writes_skill_rows
    def put_skills(self, rows: Sequence[tuple[Skill, np.ndarray, dict[str, tuple[str, str]], Sequence[str]]],
                   extra: Sequence[dict] | None = None) -> None:
        """Write (or replace) skill rows, the commit marks: (skill, embedding [dim], states, drop) with
        states fp16 -> (fingerprint, sha256) and drop the fp16 keys of states that no longer apply
        (Chroma merges metadata on upsert, so stale keys must be set to None). ``extra``: per row,
        metadata that overrides the defaults (a composite's ``state_hash`` and ``recipe``); a plain
        skill's row gets ``recipe`` None, so replacing a composite by a plain skill clears it."""
        rows = list(rows)
        extra = list(extra) if extra is not None else [{} for _ in rows]
        if len(extra) != len(rows):
            raise RegistryError(f"put_skills got {len(rows)} rows but {len(extra)} metadata overrides")
        for start in range(0, len(rows), _PAGE):
            batch = rows[start : start + _PAGE]
            metas = []
            for (skill, _, states, drop), overrides in zip(batch, extra[start : start + _PAGE]):
                meta: dict = {"content_hash": skill.content_hash, "state_hash": skill.state_hash,
                              "n_demos": len(skill.demonstrations), "embedder": self.embedder_name, "recipe": None,
                              **overrides}
                for fp16 in drop:
                    meta[f"fp_{fp16}"] = None
                    meta[f"sha_{fp16}"] = None
                for fp16, (fingerprint, sha) in states.items():
                    meta[f"fp_{fp16}"] = fingerprint
                    meta[f"sha_{fp16}"] = sha
                metas.append(meta)
            self.skills.upsert(ids=[r[0].name for r in batch], embeddings=_vectors(np.stack([r[1] for r in batch])),
                               documents=[skill_document(r[0]) for r in batch], metadatas=metas)

    @writes_skill_rows
    def set_state(self, name: str, fingerprint: str, sha: str | None) -> None:
        """Record (or with ``sha=None`` forget) the state file of skill ``name`` for one model."""
        fp16 = fingerprint[:16]
        value = {f"fp_{fp16}": fingerprint if sha else None, f"sha_{fp16}": sha}
        self.skills.update(ids=[name], metadatas=[value])

    @writes_skill_rows
    def share_state(self, state_hash: str, fingerprint: str, sha: str) -> None:
        """A state file is shared by every skill with the same template and demonstrations: after
        it is rewritten, record its new sha256 on all of them."""
        fp16 = fingerprint[:16]
        res = self.skills.get(where={"state_hash": state_hash}, include=["metadatas"])
        stale = [rid for rid, meta in zip(res["ids"], res["metadatas"])
                 if (meta or {}).get(f"fp_{fp16}") == fingerprint and (meta or {}).get(f"sha_{fp16}") != sha]
        if stale:
            self.skills.update(ids=stale, metadatas=[{f"sha_{fp16}": sha} for _ in stale])

    @writes_skill_rows
    def delete_skill(self, name: str) -> None:
        self.skills.delete(ids=[name])

    # ---- demonstration rows ----------------------------------------------------------------
    def put_demos(self, skill: Skill, embeddings: np.ndarray) -> None:
        self.put_demos_many([(skill, embeddings)])

    def put_demos_many(self, items: Sequence[tuple[Skill, np.ndarray]]) -> None:
        """Demonstration rows of several skills, in as few Chroma calls as the batch limit allows."""
        ids, vecs, docs, metas = [], [], [], []
        for skill, embeddings in items:
            h = skill.content_hash
            for i, d in enumerate(skill.demonstrations):
                ids.append(demo_id(skill.name, h, i))
                docs.append(d.input)
                metas.append({"skill": skill.name, "content_hash": h, "index": i})
            vecs.append(np.asarray(embeddings, dtype=np.float32).reshape(len(skill.demonstrations), -1))
        if not ids:
            return
        flat = np.concatenate(vecs)
        for start in range(0, len(ids), _PAGE):
            stop = start + _PAGE
            self.demos.upsert(ids=ids[start:stop], embeddings=_vectors(flat[start:stop]),
                              documents=docs[start:stop], metadatas=metas[start:stop])

    def demo_rows(self, skill: str | None = None) -> Iterator[tuple[str, dict]]:
        """(id, metadata) of every demonstration row, or those of one skill."""
        if not self.existing():
            return iter(())
        where = {"skill": skill} if skill is not None else None
        return ((rid, meta or {}) for rid, _, meta in self._rows(self.demos, where=where))

    def delete_demos(self, ids: Sequence[str]) -> None:
        ids = list(ids)
        for start in range(0, len(ids), _PAGE):
            self.demos.delete(ids=ids[start : start + _PAGE])

    def delete_stale_demos(self, name: str, keep_hash: str | None) -> int:
        """Remove ``name``'s demonstration rows whose content hash is not ``keep_hash``."""
        stale = [rid for rid, meta in self.demo_rows(name) if meta.get("content_hash") != keep_hash]
        self.delete_demos(stale)
        return len(stale)

    # ---- queries ---------------------------------------------------------------------------
    # On the hot path of routing: row ids already say what is needed, so no metadata is fetched
    # (Chroma's metadata lookups cost more than its vector search: 64 of 10,000 demonstrations
    # 11 ms -> 5 ms). A demonstration id is ``{skill}:{content_hash[:12]}:{i}`` (skill names have
    # no ':'); only the commit check reads the skill rows of the skills found.
    def nearest(self, collection: str, embedding: np.ndarray, n: int) -> tuple[list[str], list[float]]:
        """Ids and cosine similarities of the ``n`` nearest rows, best first."""
        return self.nearest_many(collection, np.asarray(embedding, np.float32).reshape(1, -1), n)[0]

    def nearest_many(self, collection: str, embeddings: np.ndarray, n: int) -> list[tuple[list[str], list[float]]]:
        """:meth:`nearest` for each row of ``embeddings`` [q, dim], in one Chroma call."""
        try:
            col = self.collection(collection, create=False) if n > 0 else None
        except RegistryError:  # a fresh registry has no collections until its first write
            col = None
        if col is None or not len(embeddings):
            return [([], []) for _ in range(len(embeddings))]
        res = col.query(query_embeddings=_vectors(embeddings), n_results=n, include=["distances"])
        return [(ids, [1.0 - float(d) for d in dists]) for ids, dists in zip(res["ids"], res["distances"])]

    def nearest_demonstrations(self, embedding: np.ndarray, n: int, max_age: float = 0.0) -> list[tuple[str, float, int]]:
        """The ``n`` nearest demonstrations of committed skills as (skill, cosine, index in the
        skill), best first; rows of unfinished or replaced versions are skipped. ``max_age`` > 0:
        which version of a skill is committed may come from a check that old (registry/recent.py)."""
        want = n
        while True:
            ids, sims = self.nearest(DEMOS, embedding, want)
            out = self._committed(ids, sims, self._short_hashes(ids, max_age))
            if len(out) >= n or len(ids) < want:  # enough, or the collection is exhausted
                return out[:n]
            want *= 4  # leftover rows took places

    def nearest_demonstrations_many(self, embeddings: np.ndarray, n: int,
                                    max_age: float = 0.0) -> list[list[tuple[str, float, int]]]:
        """:meth:`nearest_demonstrations` for each row of ``embeddings`` [q, dim]: one search and one
        commit check for all of them (a query whose leftover rows took places searches again alone)."""
        found = self.nearest_many(DEMOS, embeddings, n)
        hashes = self._short_hashes([rid for ids, _ in found for rid in ids], max_age)
        out = []
        for embedding, (ids, sims) in zip(embeddings, found):
            hits = self._committed(ids, sims, hashes)
            out.append(hits[:n] if len(hits) >= n or len(ids) < n else self.nearest_demonstrations(embedding, n, max_age))
        return out

    def _short_hashes(self, demo_ids: Sequence[str], max_age: float = 0.0) -> dict[str, str]:
        """Skill name -> its committed content hash's first 12 characters, for the skills of ``demo_ids``."""
        names = sorted({p[0] for p in (rid.rsplit(":", 2) for rid in demo_ids) if len(p) == 3})
        return self.recent.get(names, max_age, lambda some: {name: str(meta.get("content_hash", ""))[:12] for name, meta
                                                             in self.skill_metadata(some).items()}, kind="hash") if names else {}

    @staticmethod
    def _committed(ids: Sequence[str], sims: Sequence[float], hashes: dict[str, str]) -> list[tuple[str, float, int]]:
        parsed = [(rid.rsplit(":", 2), sim) for rid, sim in zip(ids, sims)]
        return [(p[0], sim, int(p[2])) for p, sim in parsed if len(p) == 3 and hashes.get(p[0]) == p[1]]

    # ---- helpers ---------------------------------------------------------------------------
    def _rows(self, col, ids=None, where=None, documents: bool = False) -> Iterator[tuple[str, str | None, dict]]:
        include = ["metadatas", "documents"] if documents else ["metadatas"]
        if ids is not None:
            for start in range(0, len(ids), _PAGE):
                res = col.get(ids=ids[start : start + _PAGE], include=include)
                docs = res.get("documents") or [None] * len(res["ids"])
                yield from zip(res["ids"], docs, res["metadatas"])
            return
        offset = 0
        while True:
            res = col.get(where=where, include=include, limit=_PAGE, offset=offset)
            docs = res.get("documents") or [None] * len(res["ids"])
            yield from zip(res["ids"], docs, res["metadatas"])
            if len(res["ids"]) < _PAGE:
                return
            offset += _PAGE

    def close(self) -> None:
        self._cols.clear()
        close = getattr(self.client, "close", None)
        if close is not None:
            try:
                close()
            except Exception as exc:  # closing must never mask the real error
                log.debug("closing the Chroma client failed: %s", exc)
