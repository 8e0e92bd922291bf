"""The skill classifier (policy ``classifier``): a calibrated classifier over all skills, learnt from
the skills' own demonstrations (and labelled queries when ``fit`` is given some).

Glossary: n queries, d embedding size, k skills, x a unit query embedding [d].

    model     a Gaussian classifier with one covariance shared by all skills (linear discriminant
              analysis): the within-skill covariance of the examples, shrunk toward a multiple of the
              identity, gives a whitening matrix ``whiten`` [d, d]; each skill is the mean of its
              whitened examples, ``means`` [k, d]. Examples: the skill's demonstrations, its skill row
              (name + description) and the labelled queries of that skill.
    weights   a softmax regression over the same examples, ``weights`` [d, k] and ``bias`` [k]: it
              gives the skill scores, s_k = x . w_k + b_k. On the development splits of three public
              intent datasets it ranked the right skill first 1.7-3.0 points more often than the
              Gaussian discriminants u . m_k - |m_k|^2 / 2 (u = x @ whiten), which a model stored
              without weights still uses.
    logits    z_k = s_k + beta * knn_k. ``knn_k`` is the skill's best demonstration similarity among the
              ``n_demos`` nearest (the lowest one retrieved when it has none there), as the text
              router sees them.
    p         softmax(z / temperature): beta and the temperature minimise the out-of-fold negative
              log-likelihood of the right skill.
    accept    a logistic model over ACCEPT_FEATURES of the top skill, P(route | query), fitted out of
              fold on labelled queries (positive: routed right) against "no skill" queries: the
              labelled nulls and the queries of skills held out of the model (fit.py); the router
              abstains when it is below the threshold.
    distance  the squared Mahalanobis distance to the nearest skill mean, |u|^2 - 2 max_k(u . m_k -
              |m_k|^2 / 2): far from every skill means out of scope (Lee et al. 2018).

Skills removed or changed after the fit lose their column; added and changed skills are routed by the
nearest-neighbour rule until the next fit (``SkillClassifier.for_skills``, ``Router.status``): a new
skill lies in directions the fitted covariance never saw, where whitened distances say "out of scope". The arrays are
stored in a safetensors file in the registry folder (``router/classifier-<sha256[:16]>.safetensors``)
named by the router settings, so the settings version pins the model.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from skillsoup.errors import PolicyError

ACCEPT_FEATURES = ("log_p1", "margin", "distance", "knn_top")
FOLDER = "router"
# file format -> its metadata keys for the skill names and hashes. Format 2 (with regression weights)
# renames them: format-1 readers ignore arrays they do not know and would score with the
# discriminants alone, under a temperature and accept model calibrated on the regression; with the
# keys renamed they refuse the file ("unreadable; run skillsoup fit again") instead.
FORMATS = {"1": ("skills", "hashes"), "2": ("skill_names", "skill_hashes")}
BETAS = (0.0, 2.0, 5.0, 10.0, 20.0, 40.0)
TEMPERATURES = np.geomspace(0.05, 20.0, 41)


@dataclass(frozen=True)
class SkillClassifier:
    skills: tuple[str, ...]
    hashes: tuple[str, ...]  # content_hash[:12] of each skill when fitted ("" for an imprinted one)
    whiten: np.ndarray  # [d, d] float32
    means: np.ndarray  # [k, d] float32, whitened
    beta: float = 0.0
    temperature: float = 1.0
    accept: dict = field(default_factory=dict)  # {"mean", "scale", "coef", "bias"} over ACCEPT_FEATURES
    weights: np.ndarray | None = None  # [d, k] float32 softmax regression (None: Gaussian discriminants)
    bias: np.ndarray | None = None  # [k] float32

    def __post_init__(self) -> None:
        k, d = len(self.skills), self.whiten.shape[1]
        ok = self.means.shape == (k, d) and len(self.hashes) == k
        if self.weights is not None:
            ok = ok and self.weights.shape == (self.whiten.shape[0], k) and self.bias is not None and self.bias.shape == (k,)
        if not ok:
            raise PolicyError("the stored skill classifier is inconsistent (shapes do not match); run skillsoup fit again")

    # ---- scoring -----------------------------------------------------------------------------
    def project(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float32) @ self.whiten

    # per-query work is one [d, k] product; what depends on the model alone is computed once
    # (a frozen dataclass still takes cached_property: it writes the instance __dict__ directly)
    @cached_property
    def _means_t(self) -> np.ndarray:
        return np.ascontiguousarray(self.means.T)

    @cached_property
    def _half_norms(self) -> np.ndarray:
        return 0.5 * np.einsum("kd,kd->k", self.means, self.means)

    @cached_property
    def columns(self) -> dict[str, int]:
        """Skill name -> its column."""
        return {n: i for i, n in enumerate(self.skills)}

    def discriminants(self, u: np.ndarray) -> np.ndarray:
        """u . m_k - |m_k|^2 / 2 for whitened queries u [n, d] -> [n, k]."""
        return u @ self._means_t - self._half_norms[None, :]

    def scores_and_distance(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(skill scores s [n, k], squared Mahalanobis distance to the nearest skill mean [n]) of
        queries x [n, d]; fitting (crossval.py) and routing both read them here."""
        x = np.atleast_2d(x)
        u = self.project(x)
        disc = self.discriminants(u)
        distance = np.einsum("nd,nd->n", u, u) - 2.0 * disc.max(axis=1)
        scores = disc if self.weights is None else np.asarray(x, np.float32) @ self.weights + self.bias
        return scores, distance

    def predict(self, x: np.ndarray, knn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(log-probabilities [n, k], accept features [n, len(ACCEPT_FEATURES)]) of queries x [n, d]
        whose per-skill best demonstration similarities are ``knn`` [n, k]."""
        scores, distance = self.scores_and_distance(x)
        logp = log_softmax((scores + self.beta * knn) / self.temperature)
        return logp, accept_features(logp, knn, distance)

    def accept_probability(self, features: np.ndarray) -> np.ndarray:
        return logistic(self.accept, features)

    # ---- skills changing after the fit -------------------------------------------------------
    def for_skills(self, current: dict[str, str]) -> tuple[SkillClassifier, dict]:
        """The model restricted to the skills that are in the registry now, unchanged since the fit
        (``current``: name -> content_hash[:12]), and what changed: {"added", "removed", "changed"}.
        Added and changed skills have no column: the router sends a query to one of them by the
        nearest-neighbour rule (router.py) until the next fit."""
        fitted = dict(zip(self.skills, self.hashes))
        changes = {"added": sorted(set(current) - set(fitted)), "removed": sorted(set(fitted) - set(current)),
                   "changed": sorted(n for n in set(current) & set(fitted) if fitted[n] != current[n])}
        if not (changes["removed"] or changes["changed"]):
            return self, changes
        keep = [i for i, n in enumerate(self.skills) if current.get(n) == self.hashes[i]]
        model = replace(self, skills=tuple(self.skills[i] for i in keep), hashes=tuple(self.hashes[i] for i in keep),
                        means=self.means[keep], weights=None if self.weights is None else self.weights[:, keep],
                        bias=None if self.bias is None else self.bias[keep])
        return model, changes

    # ---- storage -----------------------------------------------------------------------------
    def save(self, registry_dir: Path | None) -> dict:
        """Write the arrays (content-addressed) and return the reference kept in the router settings
        (``registry_dir`` None: only the reference)."""
        from safetensors.numpy import save

        from skillsoup.states.state import write_atomic

        arrays = {"whiten": self.whiten, "means": self.means}
        fmt = "1" if self.weights is None else "2"
        if fmt == "2":
            arrays |= {"weights": self.weights, "bias": self.bias}
        names_key, hashes_key = FORMATS[fmt]
        meta = {names_key: json.dumps(list(self.skills)), hashes_key: json.dumps(list(self.hashes)), "format": fmt}
        arrays = {k: np.ascontiguousarray(v, np.float32) for k, v in arrays.items()}
        blob = save(arrays, metadata=meta)
        sha = _digest(arrays, meta)
        rel = f"{FOLDER}/classifier-{sha[:16]}.safetensors"
        if registry_dir is not None:
            path = Path(registry_dir) / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                write_atomic(path, blob)
        return {"file": rel, "sha256": sha, "n_skills": len(self.skills), "dim": int(self.whiten.shape[0]),
                "beta": self.beta, "temperature": self.temperature, "accept": self.accept}

    @classmethod
    def load(cls, registry_dir: Path, ref: dict) -> SkillClassifier:
        from safetensors import SafetensorError
        from safetensors.numpy import load

        path = Path(registry_dir) / str(ref.get("file", ""))
        try:
            blob = path.read_bytes()
        except OSError:
            raise PolicyError(f"the router's classifier file {path} is missing; run skillsoup fit again") from None
        try:
            arrays = load(blob)
            header_len = int.from_bytes(blob[:8], "little")
            meta = json.loads(blob[8 : 8 + header_len]).get("__metadata__", {})
            fmt = meta.get("format", "1")
            if fmt not in FORMATS:
                raise PolicyError(f"the router's classifier file {path} has format {fmt!r}, from a newer skillsoup; "
                                  "upgrade skillsoup or run skillsoup fit again")
            names_key, hashes_key = FORMATS[fmt]
            skills, hashes = tuple(json.loads(meta[names_key])), tuple(json.loads(meta[hashes_key]))
            whiten, means = arrays["whiten"], arrays["means"]
            weights, bias = (arrays["weights"], arrays["bias"]) if fmt == "2" else (None, None)
            ok = _digest(arrays, meta) == ref.get("sha256")
        except (SafetensorError, KeyError, ValueError, TypeError) as exc:
            raise PolicyError(f"the router's classifier file {path} is unreadable ({exc}); run skillsoup fit again") from None
        if not ok:
            raise PolicyError(f"the router's classifier file {path} does not match its checksum; run skillsoup fit again")
        return cls(skills, hashes, whiten, means, float(ref["beta"]), float(ref["temperature"]), dict(ref["accept"]),
                   weights, bias)


def _digest(arrays: dict[str, np.ndarray], meta: dict[str, str]) -> str:
    """sha256 of the content (safetensors writes its header keys in no fixed order, so not of the file)."""
    h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name], np.float32)
        h.update(f"{name}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_reference(ref) -> None:
    ok = isinstance(ref, dict) and all(k in ref for k in ("file", "sha256", "beta", "temperature", "accept"))
    if ok:
        try:
            ok = len(ref["accept"]["coef"]) == len(ACCEPT_FEATURES) and all(
                np.isfinite([float(ref["beta"]), float(ref["temperature"]), float(ref["accept"]["bias"])]))
        except (KeyError, TypeError, ValueError):
            ok = False
    if not ok:
        raise PolicyError("the stored classifier reference is incomplete or from another version; run skillsoup fit again")


# ---- numerics -----------------------------------------------------------------------------------
def log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def accept_features(logp: np.ndarray, knn: np.ndarray, distance: np.ndarray) -> np.ndarray:
    """ACCEPT_FEATURES of each query's top skill: log p1, p1 - p2, distance, its knn similarity."""
    rows = np.arange(len(logp))
    if logp.shape[1] > 1:
        top2 = np.argpartition(-logp, 1, axis=1)[:, :2]
        swap = logp[rows, top2[:, 0]] < logp[rows, top2[:, 1]]
        top2[swap] = top2[swap][:, ::-1]
        first, second = logp[rows, top2[:, 0]], logp[rows, top2[:, 1]]
    else:
        top2 = np.zeros((len(logp), 1), int)
        first, second = logp[:, 0], np.full(len(logp), -np.inf)
    return np.stack([first, np.exp(first) - np.exp(second), distance, knn[rows, top2[:, 0]]], axis=1)


def logistic(model: dict, features: np.ndarray) -> np.ndarray:
    x = (np.asarray(features, np.float64) - np.asarray(model["mean"])) / np.asarray(model["scale"])
    return 0.5 * (1.0 + np.tanh(0.5 * (x @ np.asarray(model["coef"]) + float(model["bias"]))))


def gaussian_classifier(x: np.ndarray, y: np.ndarray, n_classes: int, shrink: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(whiten [d, d], whitened class means [k, d]) from examples x [n, d] with labels y in [0, k):
    the pooled within-class covariance, shrunk toward (trace / d) * I; whiten @ whiten.T = cov^-1."""
    x = np.asarray(x, np.float64)
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    if (counts == 0).any():
        raise ValueError("every class needs at least one example")
    sums = np.zeros((n_classes, x.shape[1]))
    np.add.at(sums, y, x)
    means = sums / counts[:, None]
    resid = x - means[y]
    cov = resid.T @ resid / max(1, len(x) - n_classes)
    scale = np.trace(cov) / len(cov)
    if not scale > 1e-12:  # no spread within any class (one example each): plain Euclidean distances
        scale = 1.0
    cov = (1 - shrink) * cov + shrink * scale * np.eye(len(cov))
    cov += 1e-9 * scale * np.eye(len(cov))  # keeps Cholesky defined if shrink is 0
    # cov = L L^T, so x @ inv(L)^T has identity covariance (Cholesky: several times cheaper than eigh)
    whiten = np.linalg.inv(np.linalg.cholesky(cov)).T
    return whiten.astype(np.float32), (means @ whiten).astype(np.float32)


REGRESSION_L2 = 1e-5  # per weight, on unit embeddings; 3e-6..3e-5 were within 0.5 point on the dev splits
REGRESSION_ITERS = 100  # L-BFGS iterations at most (it converged in 40-70 on the dev splits)
_THREADS = threading.Lock()  # torch's thread count is process-wide: one regression changes it at a time


def softmax_regression(x: np.ndarray, y: np.ndarray, n_classes: int, l2: float = REGRESSION_L2,
                       iters: int = REGRESSION_ITERS) -> tuple[np.ndarray, np.ndarray]:
    """(weights [d, k], bias [k]) minimising the cross-entropy of labels y in [0, k) from examples
    x [n, d], every class weighing the same in all, plus l2 * |weights|^2: full-batch L-BFGS from
    zero, float32, one thread (the problem is a few hundred wide; the same weights for the same inputs
    on one machine, while another CPU or BLAS build may round differently).
    Under a second for 150 skills and 4,700 examples on this project's CPU. Balanced classes: a skill
    with labelled queries has three times the examples of one without, which must not make it
    likelier (the Gaussian model has no prior either)."""
    import torch

    counts = np.bincount(np.asarray(y), minlength=n_classes).astype(np.float32)
    if (counts == 0).any():
        raise ValueError("every class needs at least one example")
    with _THREADS:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return _lbfgs(torch, x, y, torch.as_tensor(1.0 / counts), n_classes, l2, iters)
        finally:
            torch.set_num_threads(threads)


def _lbfgs(torch, x, y, class_weight, n_classes: int, l2: float, iters: int) -> tuple[np.ndarray, np.ndarray]:
    xt, yt = torch.as_tensor(np.asarray(x, np.float32)), torch.as_tensor(np.asarray(y, np.int64))
    w = torch.zeros(xt.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(n_classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=iters, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-5, tolerance_change=1e-9)

    def loss():
        opt.zero_grad()
        value = torch.nn.functional.cross_entropy(xt @ w + b, yt, weight=class_weight) + l2 * (w * w).sum()
        value.backward()
        return value

    opt.step(loss)
    return w.detach().numpy().copy(), b.detach().numpy().copy()


def train_classifier(x: np.ndarray, y: np.ndarray, n_classes: int, shrink: float) -> dict[str, np.ndarray]:
    """The arrays of a SkillClassifier from examples x [n, d] with labels y in [0, k): the Gaussian
    model (whiten, means: its distances) and the softmax regression (weights, bias: its scores)."""
    whiten, means = gaussian_classifier(x, y, n_classes, shrink)
    weights, bias = softmax_regression(x, y, n_classes)
    return {"whiten": whiten, "means": means, "weights": weights, "bias": bias}


def knn_similarities(queries: np.ndarray, memory: np.ndarray, labels: np.ndarray, n_classes: int,
                     n: int) -> np.ndarray:
    """[q, k]: per class, the best similarity among each query's ``n`` nearest memory rows; a class
    with none there gets the lowest similarity retrieved (what the router sees from Chroma)."""
    sims = np.asarray(queries, np.float32) @ np.asarray(memory, np.float32).T
    n = min(n, sims.shape[1])
    top = np.argpartition(-sims, n - 1, axis=1)[:, :n]
    top_sims = np.take_along_axis(sims, top, axis=1)
    out = np.repeat(top_sims.min(axis=1, keepdims=True), n_classes, axis=1).astype(np.float64)
    rows = np.repeat(np.arange(len(sims)), n)
    np.maximum.at(out, (rows, labels[top].ravel()), top_sims.ravel())
    return out


def knn_from_hits(columns: dict[str, int], hits) -> np.ndarray:
    """[k] knn similarities of one query from the router's demonstration hits ((skill, cosine), best
    first); ``columns``: skill name -> column (SkillClassifier.columns)."""
    floor = min((float(s) for _, s in hits), default=0.0)
    out = np.full(len(columns), floor)
    for name, sim in hits:
        i = columns.get(name)
        if i is not None and sim > out[i]:
            out[i] = float(sim)
    return out
