"""Router: a query -> the skills to use, with weights, or none (an empty list: abstain).

Three ways to score a skill (``route(..., router=...)``):
    text    the query's embedding against the registry's demonstration rows (and skill rows) in
            Chroma, aggregated per skill by a named policy (``policies.POLICIES``):
            ``max``, ``mean_topk``, ``skill_row``, ``max_skill_row``, ``logistic`` (an older
            per-candidate model), or ``classifier``: a calibrated classifier over all skills with an
            accept model that decides when to abstain (classifier.py; ``fit`` trains it).
    state   the model's state after reading the query (optionally after one or two example pairs)
            against each skill's stored state, compared by the feature of ``state_features`` (cosine).
    hybrid  alpha * text score + (1 - alpha) * state cosine, over the skills either one found; its
            threshold is the same blend of the two thresholds, its temperature the state one.
Then: the skills whose score reaches their threshold (per skill when fitted) are ordered by score,
cut to ``top_k``, and weighted by a softmax with a temperature (weights sum to 1). Last, every route
is finished (matches.py): zero weights dropped, the routed sources of a routed composite folded into it.

Parameters (:class:`RouterParams`) live in the registry's settings under ``"router"`` and are
versioned with them; :meth:`Router.save` writes them, ``skillsoup fit`` fits and saves them. A fitted
classifier's arrays live in a file of the registry folder that the settings name by checksum. Skills
added, changed or removed after the fit are found when the model loads (``Router.status``): removed
and changed skills lose their column, and a query whose nearest demonstration belongs to an added or
changed skill is decided by the nearest-neighbour rule (the baseline's fitted threshold) until the
next fit.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from skillsoup.errors import LabelledDataError, PolicyError, RoutingError  # noqa: F401 (re-exported)
from skillsoup.routing import policies as rf
from skillsoup.registry.index import SKILLS
from skillsoup.routing.classifier import SkillClassifier, check_reference, knn_from_hits
from skillsoup.routing.matches import SkillMatch, composite_sources, finish

if TYPE_CHECKING:
    from skillsoup.models.base import StateModel
    from skillsoup.registry.registry import SkillRegistry

log = logging.getLogger(__name__)

SETTING = "router"
ROUTERS = ("text", "state", "hybrid")
MAX_QUERY_CHARS = 4000
MAX_EXAMPLES = 2
MAX_TOP_K = 64
CLASSIFIER = "classifier"
POLICY_NAMES = (*rf.POLICIES, CLASSIFIER)
MIX_SHARE = 0.25  # a classifier route mixes the skills whose probability is at least this share of the top one's


@dataclass(frozen=True)
class RouterParams:
    policy: str = "max"
    threshold: float = 0.3  # on the policy's score
    temperature: float = 0.05  # of the softmax that turns scores into weights
    top_k: int = 3
    n_demos: int = 32  # demonstrations retrieved per query
    n_skill_rows: int = 16  # skill rows retrieved per query (policies that use them)
    k_mean: int = 3  # k of mean_topk
    skill_thresholds: Mapping[str, float] = field(default_factory=dict)
    logistic: dict | None = None  # {"features", "mean", "scale", "coef", "bias"}
    state_threshold: float = -1.0  # on the state cosine; -1 = state routing never abstains
    state_temperature: float = 0.05
    hybrid_alpha: float = 0.5
    n_states: int = 64  # skills retrieved by state feature per query
    fitted: dict | None = None  # provenance of a fit: when, on how many queries, its metrics, baseline
    classifier: dict | None = None  # reference to the fitted skill classifier (classifier.py)

    def __post_init__(self) -> None:
        if self.policy not in POLICY_NAMES:
            raise PolicyError(f"unknown aggregation policy {self.policy!r}; valid policies: {', '.join(POLICY_NAMES)}")
        if self.policy == CLASSIFIER and not self.classifier:
            raise PolicyError("policy 'classifier' needs a fitted classifier; run skillsoup fit first")
        if self.classifier:
            check_reference(self.classifier)
        if self.policy == "logistic" and not self.logistic:
            raise PolicyError("policy 'logistic' needs fitted coefficients; run skillsoup fit FILE.jsonl first")
        if self.logistic:
            _check_logistic(self.logistic)
        if not isinstance(self.skill_thresholds, Mapping):
            raise PolicyError(f"skill_thresholds must map skill names to numbers, got {self.skill_thresholds!r}")
        for name in ("temperature", "state_temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise PolicyError(f"{name} must be a finite number > 0, got {value!r}")
        numbers = {"threshold": self.threshold, "state_threshold": self.state_threshold, "hybrid_alpha": self.hybrid_alpha}
        numbers.update({f"skill_thresholds[{k!r}]": v for k, v in self.skill_thresholds.items()})
        for name, value in numbers.items():
            if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise PolicyError(f"{name} must be a finite number, got {value!r}")
        if not 0.0 <= self.hybrid_alpha <= 1.0:
            raise PolicyError(f"hybrid_alpha must lie in [0, 1], got {self.hybrid_alpha!r}")
        for name in ("top_k", "n_demos", "n_skill_rows", "k_mean", "n_states"):
            check_top_k(getattr(self, name), name, limit=MAX_TOP_K if name == "top_k" else 10_000)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["skill_thresholds"] = dict(self.skill_thresholds)
        return d

    @classmethod
    def from_dict(cls, data: Mapping | None) -> RouterParams:
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            log.warning("ignoring unknown router settings %s (written by a newer skillsoup?)", unknown)
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise PolicyError(f"router settings are unreadable ({exc}); run skillsoup fit again") from None

    def replace(self, **changes) -> RouterParams:
        return dataclasses.replace(self, **changes)


def _check_logistic(model) -> None:
    try:
        n = len(model["features"])
        ok = set(model["features"]) <= set(rf.FEATURES) and all(
            len(model[k]) == n for k in ("mean", "scale", "coef")) and math.isfinite(float(model["bias"]))
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise PolicyError("the stored logistic router model is incomplete or from another version; run skillsoup fit again")


def baseline_params(params: RouterParams) -> RouterParams:
    """The plain nearest-neighbour-threshold router: the skill of the nearest demonstration, alone,
    if its similarity reaches a threshold (fitted with the rest, else the default)."""
    base = (params.fitted or {}).get("baseline", {})
    return RouterParams(policy="max", threshold=float(base.get("threshold", RouterParams.threshold)),
                        top_k=1, n_demos=params.n_demos)


# ---- input checks -------------------------------------------------------------------------------
def check_query(query) -> str:
    if not isinstance(query, str):
        raise RoutingError(f"a query is a string, got {type(query).__name__}")
    if not query.strip():
        raise RoutingError("the query is empty; ask something")
    if len(query) > MAX_QUERY_CHARS:
        raise RoutingError(f"the query has {len(query):,} characters; the limit is {MAX_QUERY_CHARS:,} (shorten it)")
    return query.strip()


def check_top_k(top_k, name: str = "top_k", limit: int = MAX_TOP_K) -> int:
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or not 1 <= top_k <= limit:
        raise RoutingError(f"{name} must be an integer from 1 to {limit}, got {top_k!r}")
    return int(top_k)


def check_examples(examples) -> list[tuple[str, str]]:
    if examples is None:
        return []
    pairs = list(examples)
    if len(pairs) > MAX_EXAMPLES:
        raise RoutingError(f"give at most {MAX_EXAMPLES} example pairs for state routing, got {len(pairs)}")
    out = []
    for pair in pairs:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise RoutingError(f"an example is an (input, output) pair of strings, got {pair!r}")
        if sum(map(len, pair)) > MAX_QUERY_CHARS:
            raise RoutingError(f"an example pair has over {MAX_QUERY_CHARS:,} characters; shorten it")
        out.append((pair[0], pair[1]))
    return out


@dataclass(frozen=True)
class Retrieval:
    """What the text router got from the index for one query."""

    demo_hits: tuple[tuple[str, float], ...]
    skill_hits: tuple[tuple[str, float], ...]
    embedding: np.ndarray | None = None  # the query's, for the classifier


# ---- the router ---------------------------------------------------------------------------------
class Router:
    def __init__(self, registry: SkillRegistry, model: StateModel | None = None,
                 params: RouterParams | Mapping | None = None):
        self.registry = registry
        self.model = model
        self.settings_version = 0
        if params is None:
            self.reload()
        else:
            self.params = params if isinstance(params, RouterParams) else RouterParams.from_dict(params)
        self._state_index = None
        self._classifier: tuple[str, SkillClassifier, dict] | None = None  # (sha256, model for the skills now, changes)

    def __repr__(self) -> str:
        fitted = "fitted" if self.params.fitted else "default"
        return f"Router(policy={self.params.policy!r}, {fitted}, settings v{self.settings_version})"

    # ---- parameters ----------------------------------------------------------------------------
    def reload(self) -> None:
        """Read the parameters stored in the registry (defaults when none are)."""
        version, values = self.registry.settings()
        self.params = RouterParams.from_dict(values.get(SETTING))
        self.settings_version = version
        self._classifier = None

    def save(self) -> int:
        """Store the parameters in the registry; returns the new settings version."""
        self.settings_version = self.registry.set_setting(SETTING, self.params.to_dict())
        return self.settings_version

    def baseline(self) -> Router:
        return Router(self.registry, self.model, baseline_params(self.params))

    # ---- the fitted classifier -----------------------------------------------------------------
    def use_classifier(self, model: SkillClassifier) -> None:
        """Route with this (just fitted) classifier; it still follows the registry's skills."""
        self._classifier = (model.save(None)["sha256"], *self._reconcile(model))

    def _reconcile(self, model: SkillClassifier) -> tuple[SkillClassifier, dict]:
        from skillsoup.routing.index_data import skill_hashes

        current, changes = model.for_skills(skill_hashes(self.registry))
        if any(changes.values()):
            log.warning("skills changed since the router was fitted (%s); queries for added or changed skills are "
                        "routed by the nearest-neighbour rule: run skillsoup fit again to refit",
                        ", ".join(f"{len(v)} {k}" for k, v in changes.items() if v))
        return current, changes

    def classifier(self) -> SkillClassifier:
        """The fitted classifier for the registry's skills now (loaded once per settings version)."""
        ref = self.params.classifier
        if not ref:
            raise PolicyError("this router has no fitted classifier; run skillsoup fit first")
        if self._classifier is None or self._classifier[0] != ref["sha256"]:
            self._classifier = (ref["sha256"], *self._reconcile(SkillClassifier.load(self.registry.path, ref)))
        return self._classifier[1]

    def status(self) -> dict:
        """Whether the router is fitted, when, on how many queries, what it chose, and the skills
        added / changed / removed since (for ``route --json`` and ``skills list``)."""
        f = self.params.fitted or {}
        out = {"fitted": bool(f), "policy": self.params.policy, "at": f.get("at"), "n": f.get("n"),
               "chosen": f.get("chosen"), "objective": f.get("objective"), "settings_version": self.settings_version,
               "encoder": self.registry.embedder.name}
        if self.params.policy == CLASSIFIER:
            self.classifier()
            out["since_fit"] = self._classifier[2]
        return out

    # ---- routing -------------------------------------------------------------------------------
    def route(self, query: str, top_k: int | None = None, router: str = "text",
              examples: Sequence[tuple[str, str]] | None = None) -> list[SkillMatch]:
        """The skills for ``query``, best first, weights summing to 1; ``[]`` means use none.
        ``examples``: up to two (input, output) pairs the state and hybrid routers read before the
        query (the text router ignores them)."""
        query = check_query(query)
        top_k = self.params.top_k if top_k is None else check_top_k(top_k)
        examples = check_examples(examples)
        if router not in ROUTERS:
            raise RoutingError(f"unknown router {router!r}; choose one of {', '.join(ROUTERS)}")
        if router == "text":
            return self.decide(self.retrieve(self.embed([query])[0]), top_k)
        state_hits = self._state_hits(query, examples)
        if router == "state":
            names = [n for n, _ in state_hits]
            scores = np.array([s for _, s in state_hits], dtype=np.float64)
            return self.finish(_select(names, scores, np.full(len(names), self.params.state_threshold), scores,
                                       top_k, self.params.state_temperature))
        return self._hybrid(self.retrieve(self.embed([query])[0]), state_hits, top_k)

    def route_many(self, queries: Sequence[str], top_k: int | None = None, router: str = "text") -> list[list[SkillMatch]]:
        """:meth:`route` for several queries at once. The text router embeds them in one batch (a
        server's queue gains: a batch of short queries embeds in a fraction of the time one by one
        takes); the state and hybrid routers route each in turn."""
        queries = [check_query(q) for q in queries]
        if router != "text" or not queries:
            return [self.route(q, top_k=top_k, router=router) for q in queries]
        top_k = self.params.top_k if top_k is None else check_top_k(top_k)
        return [self.decide(r, top_k) for r in self.retrieve_many(self.embed(queries))]

    def embed(self, queries: Sequence[str]) -> np.ndarray:
        return self.registry.embed_texts(list(queries))

    def load(self) -> None:
        """Load the query embedder now (seconds for MiniLM), so that route times measure routing."""
        load = getattr(self.registry.embedder, "load", None)
        if load is not None:
            load()

    def retrieve(self, embedding: np.ndarray) -> Retrieval:
        """The nearest demonstrations (and skill rows, when the policy uses them) of one query."""
        p, reg = self.params, self.registry
        demos = [(m.skill, m.similarity) for m in reg.query_demonstrations(embedding, p.n_demos)]
        rows = [tuple(m) for m in reg.query_skills(embedding, p.n_skill_rows)] if p.policy in rf.NEEDS_SKILL_ROWS else []
        return Retrieval(tuple(demos), tuple(rows), np.asarray(embedding, np.float32))

    def retrieve_many(self, embeddings: np.ndarray) -> list[Retrieval]:
        """:meth:`retrieve` of each row of ``embeddings`` [q, dim], one index search per collection
        for all of them (a server's batch of queued queries); the same retrievals as one by one."""
        p, index = self.params, self.registry.index
        demos = index.nearest_demonstrations_many(embeddings, p.n_demos, self.registry.rows_max_age)
        rows = index.nearest_many(SKILLS, embeddings, p.n_skill_rows) if p.policy in rf.NEEDS_SKILL_ROWS else \
            [([], [])] * len(embeddings)
        return [Retrieval(tuple((name, sim) for name, sim, _ in d), tuple(zip(*r)), np.asarray(e, np.float32))
                for d, r, e in zip(demos, rows, embeddings)]

    def classify(self, retrieval: Retrieval) -> tuple[SkillClassifier, np.ndarray, float]:
        """(model, probability of each of its skills [k], accept probability of the top one)."""
        if retrieval.embedding is None:
            raise RoutingError("the classifier needs the query embedding; build the Retrieval with Router.retrieve")
        model = self.classifier()
        logp, feats = model.predict(retrieval.embedding[None, :], knn_from_hits(model.columns, retrieval.demo_hits)[None, :])
        return model, np.exp(logp[0]), float(model.accept_probability(feats)[0])

    def scores(self, retrieval: Retrieval) -> tuple[rf.Candidates, np.ndarray]:
        """Candidate skills and their score under the policy (for ``classifier``: every skill of
        the model and its probability)."""
        p = self.params
        if p.policy == CLASSIFIER:
            model, probs, _ = self.classify(retrieval)
            return rf.Candidates(model.skills, np.zeros((len(model.skills), 0))), probs
        cands = rf.candidates(retrieval.demo_hits, retrieval.skill_hits, p.k_mean)
        if not len(cands):
            return cands, np.zeros(0)
        return cands, rf.POLICIES[p.policy](cands, p.logistic)

    def decide(self, retrieval: Retrieval, top_k: int | None = None) -> list[SkillMatch]:
        """Thresholds, top-k and weights over the scored candidates of one retrieval."""
        p = self.params
        if p.policy == CLASSIFIER:
            return self.finish(self._decide_classifier(retrieval, top_k or p.top_k))
        cands, scores = self.scores(retrieval)
        thresholds = np.array([p.skill_thresholds.get(n, p.threshold) for n in cands.names])
        return self.finish(_select(list(cands.names), scores, thresholds, rf.weight_logits(scores, p.policy),
                                   top_k or p.top_k, p.temperature))

    def finish(self, matches: list[SkillMatch]) -> list[SkillMatch]:
        """Zero weights dropped, composites' routed sources folded into them, weights summing to 1,
        heaviest first (matches.py says why)."""
        return finish(matches, lambda names: composite_sources(self.registry, names))

    def _decide_classifier(self, retrieval: Retrieval, top_k: int) -> list[SkillMatch]:
        """The top skill if the accept model clears its threshold, mixed with the skills whose
        probability is at least MIX_SHARE of its own (up to ``top_k``), weights proportional to p."""
        model, probs, accept = self.classify(retrieval)
        changes = self._classifier[2]
        if retrieval.demo_hits and retrieval.demo_hits[0][0] in (*changes["added"], *changes["changed"]):
            name, sim = retrieval.demo_hits[0]  # a skill the model has not seen: the nearest-neighbour rule
            return [SkillMatch(name, float(sim), 1.0)] if sim >= baseline_params(self.params).threshold else []
        if not len(probs):
            return []
        order = rf.best_first(probs, top_k)
        top = model.skills[order[0]]
        if accept < self.params.skill_thresholds.get(top, self.params.threshold):
            return []
        kept = [i for i in order[:top_k] if probs[i] >= MIX_SHARE * probs[order[0]]]
        weights = probs[kept] / probs[kept].sum()
        return [SkillMatch(model.skills[i], float(probs[i]), float(w)) for i, w in zip(kept, weights)]

    def _state_hits(self, query: str, examples: list[tuple[str, str]]) -> list[tuple[str, float]]:
        if self.model is None:
            raise RoutingError("state routing needs a model: Router(registry, model=...) or --model")
        from skillsoup.routing.state_features import query_vector
        from skillsoup.routing.state_index import StateFeatureIndex

        if self._state_index is None or self._state_index.model is not self.model:
            self._state_index = StateFeatureIndex(self.registry, self.model)
        self._state_index.sync()
        return self._state_index.query(query_vector(self.model, query, examples), self.params.n_states)

    def _hybrid(self, retrieval: Retrieval, state_hits, top_k: int) -> list[SkillMatch]:
        p, a = self.params, self.params.hybrid_alpha
        cands, text = self.scores(retrieval)
        text_of = dict(zip(cands.names, text))
        state_of = dict(state_hits)
        names = list(cands.names) + [n for n in state_of if n not in text_of]
        t_floor = min(text_of.values(), default=0.0)
        s_floor = min(state_of.values(), default=0.0)
        scores = np.array([a * text_of.get(n, t_floor) + (1 - a) * state_of.get(n, s_floor) for n in names])
        threshold = a * p.threshold + (1 - a) * p.state_threshold
        return self.finish(_select(names, scores, np.full(len(names), threshold), scores, top_k, p.state_temperature))


def _select(names: list[str], scores: np.ndarray, thresholds: np.ndarray, logits: np.ndarray, top_k: int,
            temperature: float) -> list[SkillMatch]:
    """Keep scores >= threshold, best first, at most ``top_k``, softmax(logits / temperature) weights."""
    kept = np.flatnonzero(np.asarray(scores) >= thresholds)
    if kept.size == 0:
        return []
    order = kept[np.argsort(-np.asarray(scores)[kept], kind="stable")][:top_k]
    weights = rf.softmax(np.asarray(logits)[order], temperature)
    return [SkillMatch(names[i], float(scores[i]), float(w)) for i, w in zip(order, weights)]
