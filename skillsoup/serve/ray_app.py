"""Scale-out on Ray Serve: N replicas of the model behind one OpenAI-compatible endpoint.

    skillsoup serve --ray --replicas 2 --chroma-url http://127.0.0.1:8001          # a local Ray cluster
    serve run skillsoup.serve.ray_app:build model=DIR registry=DIR chroma_url=URL replicas=2

Two deployments:
    SkillSoupFront    1 replica, the HTTP ingress: the same FastAPI app as ``skillsoup serve``. It
                      routes each request (batched text routing; it holds the registry, not the model)
                      and sends the plan, plain values only, to a replica.
    SkillSoupReplica  N replicas: the model, its state cache and a batching engine each. Ray Serve's
                      model multiplexing is keyed by the routed top skill: its router sends a skill's
                      requests to a replica that already holds that skill's state, so each skill stays
                      hot on few replicas (a replica that fills up sheds to the least loaded).
All open one registry: the index on a Chroma server (``--chroma-url``); state files in each node's
registry folder, recaptured from the demonstrations where one is missing (docs/serve.md, multi-node).
A replica that dies mid-request is retried on another: a whole (non-streamed) request always, a
streamed one while nothing was sent yet; after that the stream ends with an error event.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import time
from functools import partial
from pathlib import Path

from skillsoup.errors import ServeError, SkillsoupError

try:
    import ray
    from ray import serve
except ImportError as exc:  # pragma: no cover - the ray extra is part of dev
    raise ServeError(f"Ray Serve is not installed ({exc}); pip install 'skillsoup[ray]'") from None

from skillsoup.registry import AddResult
from skillsoup.routing import SkillMatch
from skillsoup.runtime import Plan, SkillSoup
from skillsoup.serve.app import build_app
from skillsoup.serve.backend import Admission, EventStream, Planner, Started, counters, prepare_call, within
from skillsoup.serve.engine import Engine, EngineConfig
from skillsoup.serve.errors import APIError, from_library_error, server_error
from skillsoup.serve.events import Done, Failed, event_dict, event_from_dict
from skillsoup.serve.protocol import Limits, RequestSpec
from skillsoup.serve.server import ServeOptions, open_soup, serving_process, torch_threads, warm_up
from skillsoup.skills import dump_skill_yaml, parse_skills

log = logging.getLogger(__name__)

APP_NAME = "skillsoup"
NO_SKILL = "_none"  # the multiplexing key of requests that use no skill
SKILLS_PER_REPLICA = 16  # multiplexed keys a replica reports holding (its state cache decides memory)
RETRIES = 3
RETRYABLE = (ray.exceptions.RayActorError,)  # the replica died or became unreachable


# ---- options as plain values (they travel to the replicas) -----------------------------------------
def options_dict(options: ServeOptions) -> dict:
    out = dataclasses.asdict(options)
    out["registry"] = str(options.registry) if options.registry is not None else None
    return out


def options_from(data: dict) -> ServeOptions:
    data = dict(data)
    data["limits"] = Limits(**data["limits"])
    data["engine"] = EngineConfig(**data["engine"])
    data["registry"] = Path(data["registry"]) if data.get("registry") else None
    return ServeOptions(**data)


# ---- a replica: model, state cache, engine ----------------------------------------------------------
@serve.deployment(name="SkillSoupReplica")
class SkillSoupReplica:
    def __init__(self, config: dict):
        options = options_from(config)
        serving_process()  # this actor's process only serves
        torch_threads(options.threads)
        self.soup = open_soup(options)
        self.engine = Engine(self.soup.model, options.engine).start()
        self.replica = serve.get_replica_context().replica_id.unique_id
        self._preparer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="skillsoup-prepare")

    @serve.multiplexed(max_num_models_per_replica=SKILLS_PER_REPLICA)
    async def hold_skill(self, key: str) -> str:
        """Ray Serve's multiplexed "model" is a skill: holding it means its state is in this
        replica's cache, which Serve's router learns and sends the skill's next requests here."""
        if key != NO_SKILL:
            await asyncio.get_running_loop().run_in_executor(self._preparer, partial(self._warm, key))
        return key

    def _warm(self, name: str) -> None:
        try:
            self.soup.state_for([SkillMatch(name, 1.0, 1.0)])
        except SkillsoupError:  # removed meanwhile: the request itself will say so
            log.info("could not warm skill %r", name)

    async def generate(self, plan: dict, request: dict, seconds_left: float):
        """Prepare and decode one planned request; yields event dicts: "accepted" (or "rejected"
        with an HTTP error), then pieces and one "done" or "failed"."""
        await self.hold_skill(serve.get_multiplexed_model_id())
        loop = asyncio.get_running_loop()
        try:
            prepare = prepare_call(self.soup, Plan.from_dict(plan), request)
            prepared = await loop.run_in_executor(self._preparer, prepare)
        except SkillsoupError as exc:
            error = from_library_error(exc)
            yield {"kind": "rejected", "status": error.status, "error": error.body()["error"]}
            return
        stream = EventStream(loop)
        stream.job = self.engine.submit(prepared, time.monotonic() + seconds_left, stream.emit)
        yield {"kind": "accepted", "replica": self.replica}
        try:
            async for event in stream:
                data = event_dict(event)
                if isinstance(event, Done):
                    data["extra"] = {"replica": self.replica, "stats": self.snapshot()}
                yield data
        finally:
            stream.cancel()

    async def add_skills(self, skill_yaml: list[str], replace: bool) -> list[dict]:
        """Capture and add skills sent as YAML text (the front has no model); the index is shared, so
        every replica sees them."""
        skills = [s for text in skill_yaml for s in parse_skills(text, "yaml", source="<request>")]
        add = partial(self.soup.registry.add, skills, self.soup.model, replace=replace)
        results = await asyncio.get_running_loop().run_in_executor(self._preparer, add)
        return [dataclasses.asdict(r) for r in results]

    def snapshot(self) -> dict:
        return counters(self.engine, self.soup)


# ---- the front: HTTP, routing, retries ----------------------------------------------------------------
class RayBackend:
    """The backend of the front's app: plans here, prepares and decodes on a replica chosen by Ray
    Serve with the routed top skill as the multiplexing key."""

    def __init__(self, soup: SkillSoup, replica, options: ServeOptions, replicas: int):
        self.soup = soup
        self.replica = replica
        self.options = options
        self.replicas = replicas
        self.planner = Planner(soup, options.engine.max_batch)
        self.admission = Admission(options.engine.max_batch + options.max_queue)
        self.retries = 0
        self._stats: dict[str, dict] = {}  # latest counters each replica reported

    async def start(self, spec: RequestSpec, restartable: bool = False) -> Started:
        plan = await within(spec, self.options.limits.timeout_s, asyncio.wrap_future(self.planner.plan(spec)))
        key = plan.matches[0].name if plan.matches else NO_SKILL
        request = spec.prepare_options()
        holder = {"gen": None}
        await self._open(holder, key, plan, request, spec)
        cancel = lambda: holder["gen"] is not None and holder["gen"].cancel()  # noqa: E731
        return Started(plan, self._events(holder, key, plan, request, spec, restartable), cancel)

    async def _open(self, holder: dict, key: str, plan: Plan, request: dict, spec: RequestSpec) -> None:
        """Send the request to a replica and wait until it accepts it, retrying dead replicas."""
        for attempt in range(RETRIES + 1):
            left = self.options.limits.timeout_s - (time.monotonic() - spec.arrived)
            handle = self.replica.options(stream=True, multiplexed_model_id=key)
            gen = handle.generate.remote(plan.to_dict(), request, left)
            holder["gen"] = gen
            try:
                first = await gen.__anext__()
            except RETRYABLE as exc:
                self.retries += 1
                log.warning("replica unavailable (%s); retrying (%d/%d)", type(exc).__name__, attempt + 1, RETRIES)
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if first["kind"] == "rejected":
                error = first["error"]
                raise APIError(first["status"], error["message"], error["type"], error["code"], error["param"])
            return
        raise server_error("no replica could take the request; retry later")

    async def _events(self, holder, key, plan, request, spec, restartable):
        sent = False
        while True:
            try:
                async for data in holder["gen"]:
                    event = event_from_dict(data)
                    if isinstance(event, Done):
                        self._stats[event.extra["replica"]] = event.extra.pop("stats")
                    sent = sent or event.kind == "piece"
                    yield event
                return
            except RETRYABLE as exc:
                self.retries += 1
                log.warning("the replica answering a request died (%s)", type(exc).__name__)
                if sent and not restartable:
                    yield Failed("server_error", "the replica answering this request stopped mid-answer; retry it")
                    return
                if sent:
                    yield _RESTARTED
                    sent = False
                try:
                    await self._open(holder, key, plan, request, spec)
                except APIError as error:
                    yield Failed("server_error", error.message)
                    return

    async def run_blocking(self, fn):
        return await asyncio.get_running_loop().run_in_executor(None, fn)

    async def skill_names(self) -> list[str]:
        return await self.run_blocking(self.soup.registry.names)

    async def add_skills(self, skills: list, replace: bool) -> list:
        """Sent to a replica (it has the model) as skill-file text: plain values cross the wire."""
        texts = [dump_skill_yaml(s) for s in skills]
        results = await self.replica.options(multiplexed_model_id=NO_SKILL).add_skills.remote(texts, replace)
        self.soup.registry.index.recent.bump()  # written by another process: the rows read here are stale
        return [AddResult(**r) for r in results]

    async def remove_skill(self, name: str) -> list[str]:
        return await self.run_blocking(partial(self.soup.registry.remove, name))

    def snapshot(self) -> dict:
        total: dict = {"replicas": self.replicas, "replicas_reporting": len(self._stats), "retries": self.retries,
                       "healthy": True}
        for stats in self._stats.values():
            for k, v in stats.items():
                total[k] = total.get(k, 0) + v
        return total

    def describe(self) -> dict:
        return {"model": str(self.options.model or "the default model"), "backend": "ray"}

    async def close(self) -> None:
        self.planner.close()


class _Restarted:
    kind = "restarted"


_RESTARTED = _Restarted()


@serve.deployment(name="SkillSoupFront", ray_actor_options={"num_cpus": 0})
@serve.ingress()
class SkillSoupFront:
    def __init__(self, replica, config: dict, replicas: int):
        from skillsoup.registry import SkillRegistry

        self.options = options_from(config)
        registry = SkillRegistry.open(self.options.registry, chroma_url=self.options.chroma_url)
        soup = SkillSoup(registry, None)  # plans only: the model lives in the replicas
        warm_up(soup)
        self.backend = RayBackend(soup, replica, self.options, replicas)

    def __serve_build_asgi_app__(self):
        o = self.options
        return build_app(self.backend, api_key=o.api_key, admin=o.admin, limits=o.limits)


# ---- building and running ---------------------------------------------------------------------------
def check_ray_options(options: ServeOptions, replicas: int) -> None:
    """What a Ray deployment needs, checked before a cluster is started or joined."""
    options.check()
    if replicas < 1:
        raise ServeError(f"--replicas must be at least 1, got {replicas}")
    if not options.chroma_url:  # an embedded index is not safe to share between processes
        raise ServeError("Ray replicas share the registry through a Chroma server: start one (chroma run --path DIR "
                         "--host 127.0.0.1 --port 8001) and pass --chroma-url http://127.0.0.1:8001")


def application(options: ServeOptions, replicas: int, replica_cpus: float = 1.0):
    """The Serve application: the front bound to ``replicas`` replicas."""
    check_ray_options(options, replicas)
    config = options_dict(options)
    inflight = options.engine.max_batch + options.max_queue
    replica = SkillSoupReplica.options(num_replicas=replicas, max_ongoing_requests=inflight,
                                       ray_actor_options={"num_cpus": replica_cpus}).bind(config)
    front = SkillSoupFront.options(max_ongoing_requests=inflight * max(1, replicas))
    return front.bind(replica, config, replicas)


def build(args: dict):
    """The ``serve run skillsoup.serve.ray_app:build key=value ...`` entry (keys: ``build_options``).
    The proxy listens where Serve's http_options say."""
    return application(build_options(args), _arg(args, "replicas", int, 2))


def build_options(args: dict) -> ServeOptions:
    """``serve run`` arguments as options: model, registry, chroma_url, replicas (2), max_batch,
    max_queue, timeout, threads, prefill, prefill_pass_ms, admin; the API key comes from ``api_key``
    or $SKILLSOUP_API_KEY. A bad value is a ValueError that names it."""
    key = args.get("api_key") or os.environ.get("SKILLSOUP_API_KEY")
    try:
        engine = EngineConfig(max_batch=_arg(args, "max_batch", int, 32), prefill=_arg(args, "prefill", str, "auto"),
                              prefill_pass_ms=_arg(args, "prefill_pass_ms", float, 50.0))
    except ValueError as exc:
        raise ValueError(f"serve run skillsoup.serve.ray_app:build: {exc}") from None
    return ServeOptions(
        host=args.get("host", "127.0.0.1"), model=args.get("model"), registry=args.get("registry"),
        chroma_url=args.get("chroma_url"), api_key=key, admin=str(args.get("admin", "")).lower() in ("1", "true"),
        engine=engine, max_queue=_arg(args, "max_queue", int, 64), threads=_arg(args, "threads", int, None),
        limits=Limits(timeout_s=_arg(args, "timeout", float, 60)),
    )


def _arg(args: dict, key: str, cast, default):
    """One ``serve run`` argument (they arrive as text), or a ValueError that names it."""
    if args.get(key) in (None, ""):
        return default
    try:
        return cast(args[key])
    except ValueError:
        raise ValueError(f"serve run skillsoup.serve.ray_app:build: {key}={args[key]!r} is not a valid "
                         f"{cast.__name__}") from None


def run_ray(options: ServeOptions, replicas: int, address: str | None = None, blocking: bool = True):
    """Start (or join) a Ray cluster, put Serve's HTTP proxy on ``options.host:port`` and run."""
    check_ray_options(options, replicas)  # a refused deployment starts nothing
    if not ray.is_initialized():
        if address:
            ray.init(address=address)
        else:  # a local cluster on the loopback address only
            ray.init(address="local", include_dashboard=False, _node_ip_address="127.0.0.1")
    serve.start(http_options={"host": options.host, "port": options.port})
    app = application(options, replicas, replica_cpus=float(options.threads or 1))
    return serve.run(app, name=APP_NAME, route_prefix="/", blocking=blocking)
