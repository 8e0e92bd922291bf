"""SkillSoup: query -> routed (or pinned) skills -> their states, mixed -> an answer from the model.

    soup = SkillSoup.open()                       # default registry and model (skillsoup.config)
    answer = soup.answer("set a timer for 5 minutes")
    answer.text, answer.matches, answer.timings
    for piece in (stream := soup.stream("...")):  # text pieces as they are decoded
        print(piece, end="")
    stream.answer                                 # the Answer, once the stream is exhausted

    plan = soup.plan("...")                       # routing only: which skills, with weights
    prepared = soup.prepare(plan)                 # their state, the prompt's ids, stops: nothing decoded

``stream`` is ``plan`` + ``prepare`` + decoding; a server that decodes many requests together
(``skillsoup.serve``) calls the first two and batches the rest, so both read the same prompt from the
same state.

The query is rendered with the top-weighted skill's template (``Skill.render_query``), so the model
reads it in the format its demonstrations taught, and the answer ends at that template's
``stop_strings()``. With no skill the default template is used and the model starts from its
neutral state (BOS). States come from ``registry.state(name, model)`` through an LRU on the model's
device (:class:`~skillsoup.states.bank.StateBank`: on a GPU, resident there and fed from pinned host
memory), and K of them mix in one launch into the state the model reads.

Timings (milliseconds unless named otherwise):
    route_ms            routing (0 when skills are pinned or routing is off)
    load_mix_ms         fetching skills and states (cache or store) and mixing them
    prefill_ms          one parallel forward over the prompt but its last token
    first_token_ms      from the start of prefill to the first new token
    decode_tokens_per_s new tokens after the first, per second of decoding
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass

from skillsoup.errors import GenerationError, MixError, RoutingError, UnknownSkillError
from skillsoup.models.generation import StopDecoder, check_generation_options, eos_ids
from skillsoup.routing.router import Router, SkillMatch, check_query
from skillsoup.skills.skill import DEFAULT_TEMPLATE, Skill
from skillsoup.states.bank import StateBank
from skillsoup.states.cache import DEFAULT_BUDGET
from skillsoup.states.mixing import CONV_POLICIES, KV_POLICIES, mix, parse_layers
from skillsoup.states.state import SkillState

log = logging.getLogger(__name__)

MIX_MODES = CONV_POLICIES  # how the conv states are combined; see skillsoup.states.mixing
KV_MODES = KV_POLICIES  # how hybrid models' attention KV is combined (docs/states.md)
DEFAULT_SKILL = Skill("default", "the default template", (), DEFAULT_TEMPLATE)


@dataclass(frozen=True)
class Timings:
    route_ms: float = 0.0
    load_mix_ms: float = 0.0
    prefill_ms: float = 0.0
    first_token_ms: float = 0.0
    decode_tokens_per_s: float = 0.0
    total_ms: float = 0.0
    n_tokens: int = 0


@dataclass(frozen=True)
class Answer:
    text: str
    matches: tuple[SkillMatch, ...]  # empty: no skill was used
    timings: Timings
    pinned: bool = False  # the skills were given, not routed
    stopped: bool = False  # the stream was closed before the answer ended
    truncated: bool = False  # cut at max_new_tokens, before a stop string or EOS ended it

    def to_dict(self) -> dict:
        return {"text": self.text, "matches": [asdict(m) for m in self.matches], "timings": asdict(self.timings),
                "pinned": self.pinned, "stopped": self.stopped, "truncated": self.truncated}


@dataclass(frozen=True)
class Plan:
    """Which skills answer a query (routed or pinned), before any state is loaded: plain values, so
    a server's front can route and send the plan to the process that holds the states."""

    query: str
    matches: tuple[SkillMatch, ...]  # empty: no skill is used
    pinned: bool = False
    route_ms: float = 0.0

    def to_dict(self) -> dict:
        return {"query": self.query, "matches": [asdict(m) for m in self.matches], "pinned": self.pinned,
                "route_ms": self.route_ms}

    @classmethod
    def from_dict(cls, data: Mapping) -> Plan:
        return cls(str(data["query"]), tuple(SkillMatch(**m) for m in data["matches"]), bool(data["pinned"]),
                   float(data.get("route_ms", 0.0)))


@dataclass(frozen=True)
class Prepared:
    """A request ready to decode, nothing generated yet: the prompt's token ids, the state they are
    read from (the plan's skills, mixed), where the answer ends, and the sampling options.
    :meth:`SkillSoup.stream` decodes one; a batching server decodes many together."""

    plan: Plan
    prompt_ids: tuple[int, ...]
    state: SkillState
    stop: tuple[str, ...]  # the template's stop strings, then any extra ones
    stop_ids: tuple[int, ...]  # token ids that end the answer (EOS)
    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    load_mix_ms: float = 0.0

    def sampling(self) -> dict:
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "seed": self.seed}


class AnswerText:
    """An answer's text as its pieces arrive. The space a template puts after its label
    ("Output: ") is not part of the answer: ``add`` drops it and returns what to show ('' for none)."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, piece: str) -> str:
        if not self.parts:
            piece = piece.lstrip(" \t")
            if not piece:
                return ""
        self.parts.append(piece)
        return piece

    @property
    def text(self) -> str:
        return "".join(self.parts)


class Stream:
    """Text pieces of one answer. ``matches`` is known at once; ``answer`` once the pieces are read
    to the end (or after ``close()``, which stops generating)."""

    def __init__(self, matches: tuple[SkillMatch, ...], pinned: bool, pieces: Iterator[str], timings: dict,
                 ending: dict | None = None):
        self.matches = matches
        self.pinned = pinned
        self._pieces = pieces
        self._timings = timings
        self._ending = ending if ending is not None else {}  # {"truncated": bool}, set by the generator
        self._text = AnswerText()
        self._answer: Answer | None = None

    def __iter__(self) -> Iterator[str]:
        if self._answer is not None:
            return
        for piece in self._pieces:
            piece = self._text.add(piece)
            if piece:
                yield piece
        self._finish(stopped=False)

    def read(self) -> Answer:
        """Read what is left and return the Answer."""
        for _ in self:
            pass
        return self.answer

    def close(self) -> None:
        if self._answer is None:
            self._pieces.close()
            self._finish(stopped=True)

    def _finish(self, stopped: bool) -> None:
        if self._answer is None:
            truncated = self._ending.get("truncated", False) and not stopped
            self._answer = Answer(self._text.text, self.matches, Timings(**self._timings), self.pinned, stopped,
                                  truncated)

    @property
    def answer(self) -> Answer:
        if self._answer is None:
            raise GenerationError("the answer is ready once the stream has been read to the end; use stream.read()")
        return self._answer


class SkillSoup:
    def __init__(self, registry, model, router: Router | None = None, cache_bytes: int = DEFAULT_BUDGET,
                 owns_registry: bool = False):
        """``model`` None makes a soup that only plans (routes and pins): a server's front."""
        self.registry = registry
        self.model = model
        self.router = router or Router(registry, model)
        self.cache = StateBank(cache_bytes, device=model.device if model is not None else "cpu")  # on the GPU there
        self._owns_registry = owns_registry

    @classmethod
    def open(cls, registry=None, model=None, chroma_url: str | None = None, *, embedder=None,
             cache_bytes: int = DEFAULT_BUDGET) -> SkillSoup:
        """``registry``: a SkillRegistry or a folder (default: config's); ``model``: a StateModel, a
        checkpoint folder or hub id (default: config's default model)."""
        from skillsoup import config
        from skillsoup.models import load_model
        from skillsoup.registry import SkillRegistry

        owns = not isinstance(registry, SkillRegistry)
        if owns:
            registry = SkillRegistry.open(registry, chroma_url=chroma_url, embedder=embedder)
        try:
            if model is None or isinstance(model, (str, os.PathLike)):
                model = load_model(model or config.default_model())
        except BaseException:
            if owns:
                registry.close()
            raise
        return cls(registry, model, cache_bytes=cache_bytes, owns_registry=owns)

    def close(self) -> None:
        self.cache.clear()
        if self._owns_registry:
            self.registry.close()

    def __enter__(self) -> SkillSoup:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SkillSoup({self.registry!r}, {self.model!r}, {self.router!r})"

    # ---- answering -----------------------------------------------------------------------------
    def route(self, query: str, **options) -> list[SkillMatch]:
        return self.router.route(query, **options)

    def answer(self, query: str, **options) -> Answer:
        """The whole answer at once; options as for :meth:`stream`."""
        return self.stream(query, **options).read()

    def stream(self, query: str, *, skills: Mapping[str, float] | Sequence[str] | None = None, mix: str = "mix",
               routing: bool = True, router: str = "text", top_k: int | None = None,
               examples: Sequence[tuple[str, str]] | None = None, max_new_tokens: int = 64,
               temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
               layers: str | Sequence[int] | None = None, kv: str = "top") -> Stream:
        """Route (or take ``skills``: {name: weight} or names, equal weights), mix the states with
        conv policy ``mix`` and, for hybrid models, attention-KV policy ``kv`` ("top" or "concat",
        see docs/states.md) (only ``layers``, e.g. "0-1", when given; the other layers come from the
        top skill), and stream the answer. Routing and loading happen now, so their errors
        surface here; generation happens as the stream is read."""
        query = check_query(query)
        sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
        self._check_options(mix, kv, layers, sampling)  # before routing: a bad option costs nothing
        plan = self.plan(query, skills=skills, routing=routing, router=router, top_k=top_k, examples=examples)
        prepared = self.prepare(plan, mix=mix, kv=kv, layers=layers, **sampling)
        timings = {"route_ms": plan.route_ms, "load_mix_ms": prepared.load_mix_ms}
        ending: dict = {}
        return Stream(plan.matches, plan.pinned, self._generate(prepared, timings, ending), timings, ending)

    def plan(self, query: str, *, skills: Mapping[str, float] | Sequence[str] | None = None, routing: bool = True,
             router: str = "text", top_k: int | None = None,
             examples: Sequence[tuple[str, str]] | None = None) -> Plan:
        """Which skills answer ``query``: ``skills`` pinned (as for :meth:`stream`), else routed
        (unless ``routing`` is off: no skill)."""
        query = check_query(query)
        pinned = skills is not None
        if routing and not pinned:
            self.router.load()  # once: its load time is not route time
        t0 = time.perf_counter()
        if pinned:
            matches = self._pinned(skills)
        elif routing:
            matches = tuple(self.router.route(query, top_k=top_k, router=router, examples=examples))
        else:
            matches = ()
        route_ms = (time.perf_counter() - t0) * 1000 if not pinned and routing else 0.0
        return Plan(query, matches, pinned, route_ms)

    def prepare(self, plan: Plan, *, mix: str = "mix", kv: str = "top", layers: str | Sequence[int] | None = None,
                max_new_tokens: int = 64, temperature: float = 0.0, top_p: float = 1.0, seed: int | None = None,
                stop: Sequence[str] = ()) -> Prepared:
        """The plan's skills' state (mixed, cached), the query rendered with the top skill's
        template and encoded, and its stop strings (``stop`` adds more): all a decoder needs."""
        sampling = dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed)
        layers = self._check_options(mix, kv, layers, sampling)
        if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
            raise GenerationError(f"stop must be a list of non-empty strings, got {stop!r}")
        if self.model is None:
            raise GenerationError("this SkillSoup only plans (it has no model); give it a model to answer")
        t0 = time.perf_counter()
        state, template = self.state_for(plan.matches, mix, layers, kv)
        load_mix_ms = (time.perf_counter() - t0) * 1000
        ids = self.model.encode(template.render_query(plan.query))
        stops = tuple(dict.fromkeys([*template.stop_strings(), *stop]))
        return Prepared(plan, tuple(ids), state, stops, eos_ids(self.model), load_mix_ms=load_mix_ms, **sampling)

    def _check_options(self, mix: str, kv: str, layers, sampling: dict):
        """Mixing policies, sampling options and layers, checked; returns the layers as indices (or None)."""
        if mix not in MIX_MODES:
            raise MixError(f"unknown mixing mode {mix!r}; choose one of {', '.join(MIX_MODES)}")
        if kv not in KV_MODES:
            raise MixError(f"unknown kv policy {kv!r}; choose one of {', '.join(KV_MODES)}")
        check_generation_options(sampling["max_new_tokens"], sampling["temperature"], sampling["top_p"], None,
                                 sampling["seed"])
        if isinstance(layers, str):
            return parse_layers(layers, self.model.num_layers if self.model is not None else None)
        return layers

    def _pinned(self, skills) -> tuple[SkillMatch, ...]:
        if isinstance(skills, Mapping):
            pairs = list(skills.items())
        elif isinstance(skills, (str, bytes)):
            raise RoutingError("skills is a list of names or a {name: weight} mapping, not one string")
        else:
            pairs = [(name, 1.0) for name in skills]
        if not pairs:
            raise RoutingError("no skills given to pin; give at least one name, or leave skills out to route")
        names = [n for n, _ in pairs]
        if len(set(names)) != len(names):
            raise RoutingError(f"a skill is pinned twice in {names}; give each once")
        for name, w in pairs:
            if not isinstance(name, str) or name not in self.registry:
                raise UnknownSkillError(f"unknown skill {name!r}; see skillsoup skills list", (name,))
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w <= 0:
                raise RoutingError(f"the weight of skill {name!r} must be a finite number > 0, got {w!r}")
        total = float(sum(w for _, w in pairs))
        pairs.sort(key=lambda p: -p[1])
        return tuple(SkillMatch(n, 1.0, float(w) / total) for n, w in pairs)

    def state_for(self, matches: Sequence[SkillMatch], mode: str = "mix", layers: Sequence[int] | None = None,
                  kv: str = "top"):
        """The state an answer to ``matches`` starts from, and the skill whose template renders the
        query: the matches' stored states mixed with their weights (conv policy ``mode``, KV policy
        ``kv``, only ``layers`` when given); no match = the neutral state and the default template."""
        if not matches:
            return self.model.neutral_state(), DEFAULT_SKILL
        states = []
        skills = self.registry.get_many([m.name for m in matches])
        for m, skill in zip(matches, skills):
            key = (m.name, skill.content_hash, self.model.fingerprint)
            states.append(self.cache.get(key, lambda name=m.name: self.registry.state(name, self.model)))
        top = skills[0]
        if len(states) == 1:
            return states[0], top
        return mix(states, [m.weight for m in matches], conv=mode, layers=layers, kv=kv), top

    def _generate(self, prepared: Prepared, timings: dict, ending: dict) -> Iterator[str]:
        """Prefill all prompt tokens but the last, then decode from the last one; fills ``timings``
        and ``ending["truncated"]`` (the token limit ended the answer)."""
        model = self.model
        ids, state = list(prepared.prompt_ids), prepared.state
        start = time.perf_counter()
        if len(ids) > 1:
            state = model.capture(ids[:-1], state)
        first = time.perf_counter()
        timings.update(prefill_ms=(first - start) * 1000, first_token_ms=0.0, decode_tokens_per_s=0.0, n_tokens=0)
        decoder = StopDecoder(model, prepared.stop)
        n = 0
        t_first = None
        try:
            for token in model.generate_ids(ids[-1:], state, stop_ids=prepared.stop_ids, **prepared.sampling()):
                n += 1
                if t_first is None:
                    t_first = time.perf_counter()
                    timings["first_token_ms"] = (t_first - start) * 1000
                piece, done = decoder.push(token)
                if piece:
                    yield piece
                if done:
                    break
            else:  # no stop string: EOS, or the token limit when all of them were used
                ending["truncated"] = n == prepared.max_new_tokens > 0
                tail = decoder.finish()
                if tail:
                    yield tail
        finally:
            end = time.perf_counter()
            timings["n_tokens"] = n
            timings["total_ms"] = timings.get("route_ms", 0.0) + timings.get("load_mix_ms", 0.0) + (end - start) * 1000
            if n > 1 and t_first is not None and end > t_first:
                timings["decode_tokens_per_s"] = (n - 1) / (end - t_first)
