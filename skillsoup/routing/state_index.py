"""StateFeatureIndex: the state feature of every skill for one model, in its own Chroma collection.

Collection ``state_features_<fingerprint[:16]>`` (cosine space): one row per skill, id = skill name,
embedding = :func:`skillsoup.routing.state_features.state_vector` of the skill's stored state for that model,
metadata = ``state_hash`` and ``feature`` (the feature's definition). Rows are filled lazily:
:meth:`sync` computes the rows that are missing or outdated (another state hash or feature
definition) from ``registry.state(name, model)`` (which loads, or recomputes, the state) and drops
rows of removed skills. Writes hold the registry lock, like every index write.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from skillsoup.errors import RegistryError, SkillsoupError
from skillsoup.registry.store import fp_key
from skillsoup.routing.state_features import FEATURE, state_vector

if TYPE_CHECKING:
    from skillsoup.models.base import StateModel
    from skillsoup.registry.registry import SkillRegistry

log = logging.getLogger(__name__)

PREFIX = "state_features_"
_PAGE = 1000


class StateFeatureIndex:
    def __init__(self, registry: SkillRegistry, model: StateModel):
        self.registry = registry
        self.model = model
        self.name = PREFIX + fp_key(model.fingerprint)
        self._col = None

    def _collection(self):
        if self._col is None:
            index = self.registry.index
            try:
                self._col = index.collection(self.name, create=False)
            except RegistryError:
                with self.registry.lock:  # creating a collection is a write
                    meta = {"feature": FEATURE, "fingerprint": self.model.fingerprint}
                    self._col = index.collection(self.name, metadata=meta)
        return self._col

    def _rows(self) -> dict[str, dict]:
        col, out, offset = self._collection(), {}, 0
        while True:
            res = col.get(include=["metadatas"], limit=_PAGE, offset=offset)
            out.update({rid: meta or {} for rid, meta in zip(res["ids"], res["metadatas"])})
            if len(res["ids"]) < _PAGE:
                return out
            offset += _PAGE

    def sync(self) -> int:
        """Bring the rows in line with the registry's skills; returns how many were (re)computed."""
        want = {name: str(meta.get("state_hash", "")) for name, meta in self.registry.index.skill_metadata().items()}
        have = self._rows()
        stale = sorted(n for n, h in want.items()
                       if have.get(n, {}).get("state_hash") != h or have[n].get("feature") != FEATURE)
        gone = sorted(set(have) - set(want))
        if not stale and not gone:
            return 0
        with self.registry.lock:
            col = self._collection()
            for start in range(0, len(stale), 64):
                names, vectors = [], []
                for n in stale[start : start + 64]:
                    try:
                        vectors.append(state_vector(self.registry.state(n, self.model)))
                        names.append(n)
                    except SkillsoupError as exc:  # e.g. a composite whose source was removed: skip, say why
                        log.warning("no state feature for skill %r: %s", n, exc)
                if not names:
                    continue
                vectors = np.stack(vectors)
                col.upsert(ids=names, embeddings=vectors.tolist(),
                           metadatas=[{"state_hash": want[n], "feature": FEATURE} for n in names])
            for start in range(0, len(gone), _PAGE):
                col.delete(ids=gone[start : start + _PAGE])
        log.info("state features for model %s: %d computed, %d dropped", self.model.fingerprint[:12], len(stale), len(gone))
        return len(stale)

    def query(self, vector: np.ndarray, n: int) -> list[tuple[str, float]]:
        """The ``n`` skills whose state feature is nearest to ``vector``: (name, cosine), best first."""
        col = self._collection()
        count = col.count()
        if n <= 0 or count == 0:
            return []
        res = col.query(query_embeddings=np.asarray(vector, np.float32).reshape(1, -1).tolist(),
                        n_results=min(n, count), include=["distances"])
        return [(rid, 1.0 - float(d)) for rid, d in zip(res["ids"][0], res["distances"][0])]

    def vectors(self) -> dict[str, np.ndarray]:
        """Every stored feature by skill name (for fitting and tests)."""
        col, out, offset = self._collection(), {}, 0
        while True:
            res = col.get(include=["embeddings"], limit=_PAGE, offset=offset)
            out.update({rid: np.asarray(e, np.float32) for rid, e in zip(res["ids"], res["embeddings"])})
            if len(res["ids"]) < _PAGE:
                return out
            offset += _PAGE
