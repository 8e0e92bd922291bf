"""The OpenAI-compatible HTTP API over a backend (this process's engine, or Ray Serve replicas).

    POST /v1/chat/completions   POST /v1/completions     (stream: server-sent events, OpenAI chunks)
    GET  /v1/models             GET  /v1/models/{id}     ('skillsoup' routes, 'skillsoup/<skill>' pins)
    GET  /v1/skills             POST /v1/skills, DELETE /v1/skills/{name}   (edits only with --admin)
    GET  /health                GET  /metrics            (Prometheus text)

Transport only: requests are parsed and checked here (``protocol``), answered by the backend, and
every error leaves in OpenAI's shape (``errors``). With an API key, everything but /health needs
'Authorization: Bearer KEY'.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from skillsoup.errors import SkillsoupError
from skillsoup.serve import protocol
from skillsoup.serve.admin import add_admin_routes
from skillsoup.serve.errors import APIError, from_library_error, model_not_found, server_error, timed_out
from skillsoup.serve.metrics import CONTENT_TYPE, Metrics
from skillsoup.serve.protocol import Limits
from skillsoup.serve.security import KeyGuard, read_body

log = logging.getLogger(__name__)
ENDPOINTS = {"/v1/chat/completions": "chat", "/v1/completions": "completion"}


def build_app(backend, *, api_key: str | None = None, admin: bool = False, limits: Limits | None = None,
              on_close=None) -> FastAPI:
    """The app; when the server shuts down, the backend is closed, then ``on_close()`` runs."""
    limits = limits or Limits()
    guard = KeyGuard(api_key)
    metrics = Metrics(backend.snapshot)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        await backend.close()
        if on_close is not None:
            on_close()

    app = FastAPI(title="skillsoup", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.backend, app.state.metrics = backend, metrics

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError):
        endpoint = ENDPOINTS.get(request.url.path)
        if endpoint:
            metrics.requests.labels(endpoint, str(exc.status)).inc()
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        message = f"no route {request.method} {request.url.path}" if exc.status_code in (404, 405) else str(exc.detail)
        return JSONResponse(APIError(exc.status_code, message, code="not_found").body(), status_code=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        return JSONResponse(APIError(422, str(exc.errors()[0]["msg"])).body(), status_code=422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse(server_error(f"internal error: {type(exc).__name__}").body(), status_code=500)

    @app.get("/health")
    async def health():
        snap = backend.snapshot()
        body = {"status": "ok" if snap.get("healthy", True) else "unhealthy", **backend.describe(),
                "rows": snap.get("rows", 0), "waiting": snap.get("waiting", 0), "replicas": snap.get("replicas", 1)}
        return JSONResponse(body, status_code=200 if snap.get("healthy", True) else 503)

    @app.get("/metrics")
    async def prometheus(request: Request):
        guard.check(request)
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models(request: Request):
        guard.check(request)
        names = await backend.skill_names()
        return {"object": "list", "data": [_model(protocol.MODEL)] + [_model(f"{protocol.MODEL}/{n}") for n in names]}

    @app.get("/v1/models/{model_id:path}")
    async def one_model(model_id: str, request: Request):
        guard.check(request)
        skill = model_id.split("/", 1)[1] if model_id.startswith(protocol.MODEL + "/") else None
        if model_id != protocol.MODEL and (skill is None or skill not in await backend.skill_names()):
            raise model_not_found(model_id)
        return _model(model_id)

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await _complete("chat", request)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await _complete("completion", request)

    async def _complete(kind: str, request: Request):
        guard.check(request)
        parsed = protocol.parse(kind, await read_body(request, limits.max_body_bytes), limits)
        spec = protocol.spec_of(parsed, limits)
        ticket = backend.admission.take()
        try:
            started = await backend.start(spec, restartable=not parsed.stream)
        except SkillsoupError as exc:
            ticket.release()
            raise from_library_error(exc) from None
        except BaseException:
            ticket.release()
            raise
        reply = _Reply(kind, parsed.model, spec, started, metrics)
        if parsed.stream:
            include_usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
            return _EventResponse(reply.sse(include_usage), cleanup=lambda: reply.close_stream(ticket))
        try:
            return JSONResponse(await reply.whole(request))
        finally:
            ticket.release()

    add_admin_routes(app, backend, guard, admin)
    return app


def _model(model_id: str) -> dict:
    return {"id": model_id, "object": "model", "created": 0, "owned_by": "skillsoup"}


class _Reply:
    """One answer on its way out: as a whole JSON body, or as server-sent events."""

    def __init__(self, kind: str, model: str, spec, started, metrics: Metrics):
        self.kind, self.model, self.spec, self.started, self.metrics = kind, model, spec, started, metrics
        self.rid, self.created = protocol.new_id(kind), int(time.time())
        self.first_seen = False
        self.ended = False  # a stream sent its Done or Failed

    def _saw_text(self) -> None:
        if not self.first_seen:
            self.first_seen = True
            self.metrics.ttft.labels(self.kind).observe(time.monotonic() - self.spec.arrived)

    def _field(self, done=None) -> dict:
        extra = {} if done is None else {"timings": done.timings, **done.extra}
        return protocol.skillsoup_field(self.started.plan, self.spec, extra)

    def _count(self, status: int, done=None) -> None:
        self.metrics.requests.labels(self.kind, str(status)).inc()
        self.metrics.duration.labels(self.kind).observe(time.monotonic() - self.spec.arrived)
        if done is not None:
            self.metrics.prompt_tokens.inc(done.prompt_tokens)
            self.metrics.completion_tokens.inc(done.completion_tokens)

    def _failure(self, event) -> APIError:
        if event.code == "timeout":
            self.metrics.timed_out.inc()
            return timed_out(event.message)
        return server_error(event.message)

    async def whole(self, request: Request) -> dict:
        """Collect the answer; a client that leaves meanwhile cancels it."""
        watcher = asyncio.create_task(_on_disconnect(request, self.started.cancel))
        parts, done = [], None
        try:
            async for event in self.started.events:
                if event.kind == "piece":
                    self._saw_text()
                    parts.append(event.text)
                elif event.kind == "restarted":  # the Ray replica died; the request runs again
                    parts.clear()
                elif event.kind == "failed":
                    error = self._failure(event)
                    raise error
                else:
                    done = event
        finally:
            watcher.cancel()
        if done is None:  # the client left
            self.metrics.cancelled.inc()
            self._count(499)
            return {}
        self._count(200, done)
        use = protocol.usage(done.prompt_tokens, done.completion_tokens)
        return protocol.response(self.kind, self.rid, self.created, self.model, "".join(parts), done.reason, use,
                                 self._field(done))

    async def sse(self, include_usage: bool):
        first = protocol.chunk(self.kind, self.rid, self.created, self.model, "", soup=self._field(), first=True)
        yield _event(first)
        async for event in self.started.events:
            if event.kind == "piece":
                self._saw_text()
                yield _event(protocol.chunk(self.kind, self.rid, self.created, self.model, event.text))
            elif event.kind == "failed":
                self.ended = True
                error = self._failure(event)
                self._count(error.status)
                yield _event(error.body())
            elif event.kind == "done":
                self.ended = True
                self._count(200, event)
                yield _event(protocol.chunk(self.kind, self.rid, self.created, self.model, None, event.reason,
                                            soup=self._field(event)))
                if include_usage:
                    use = protocol.usage(event.prompt_tokens, event.completion_tokens)
                    yield _event(protocol.chunk(self.kind, self.rid, self.created, self.model, None, use=use))
                yield "data: [DONE]\n\n"

    def close_stream(self, ticket) -> None:
        """However the stream ended: free the row (a no-op once it is done) and the admission slot."""
        self.started.cancel()
        ticket.release()
        if not self.ended:  # the client left mid-stream
            self.ended = True
            self.metrics.cancelled.inc()
            self._count(499)


class _EventResponse(StreamingResponse):
    """Server-sent events whose ``cleanup`` runs however the response ends: finished, or cancelled
    because the client left, even before the first event was sent."""

    def __init__(self, content, cleanup):
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self._cleanup = cleanup

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._cleanup()


def _event(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _on_disconnect(request: Request, cancel) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            cancel()
            return
