"""Starting a server: in this process with uvicorn (``run_local``), or in a background thread for
tests and benchmarks (``ServerThread``). Ray Serve lives in ``ray_app``."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from skillsoup.serve.engine import EngineConfig
from skillsoup.serve.protocol import Limits
from skillsoup.serve.security import check_bind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    model: str | None = None
    registry: Path | None = None
    chroma_url: str | None = None
    api_key: str | None = None
    admin: bool = False
    limits: Limits = field(default_factory=Limits)
    engine: EngineConfig = field(default_factory=EngineConfig)
    max_queue: int = 64
    threads: int | None = None  # torch threads; None: half the cores (the rest route and serve HTTP)

    def check(self) -> None:
        check_bind(self.host, self.api_key, self.admin)


# How long a thread may hold the GIL while another waits for it. A server process runs the event
# loop, the planner, the preparer and the engine as threads; with Python's default 5 ms, every hand-off
# from a busy engine to the loop could wait that long. At 1 ms, bench_serve --pinned with 32 clients
# gave TTFT p95 107-147 ms against 171-221 ms (three pairs in one hour), with tokens/s unchanged.
SWITCH_INTERVAL_S = 0.001


def serving_process() -> None:
    """Process-wide settings for a process that exists to serve (``run_local``, a Ray replica); an
    app that embeds the backend keeps its own."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)


def torch_threads(threads: int | None) -> int:
    import torch

    n = threads or max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(n)
    return n


def open_soup(options: ServeOptions, model=None):
    """The registry and model a server answers from, warmed up: the embedder loaded and the neutral
    state computed, so the first request does not pay for them."""
    from skillsoup import SkillSoup

    soup = SkillSoup.open(options.registry, model or options.model, chroma_url=options.chroma_url)
    warm_up(soup)
    return soup


SKILL_ROWS_MAX_AGE = 1.0  # seconds: a skill changed by another process is answered with within this


def warm_up(soup) -> None:
    """Ready to serve: the embedder loaded, the neutral state computed, and each request's skill rows
    read from memory for up to SKILL_ROWS_MAX_AGE (registry/recent.py) instead of from Chroma."""
    soup.registry.rows_max_age = SKILL_ROWS_MAX_AGE
    soup.router.embed(["warm up"])
    if soup.model is not None:
        soup.model.neutral_state()


def build_local(soup, options: ServeOptions, on_close=None):
    """The FastAPI app over a LocalBackend (the engine starts now; it stops when the app shuts down)."""
    from skillsoup.serve.app import build_app
    from skillsoup.serve.backend import LocalBackend

    backend = LocalBackend(soup, options.engine, options.max_queue, options.limits.timeout_s)
    app = build_app(backend, api_key=options.api_key, admin=options.admin, limits=options.limits, on_close=on_close)
    return app, backend


def bind_socket(host: str, port: int):
    """The listening address taken now, before the model loads: a port in use fails in a moment with
    one line, not after the whole start-up (uvicorn listens on this socket)."""
    import socket

    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except (OSError, IndexError) as exc:
        from skillsoup.errors import ServeError

        raise ServeError(f"cannot listen on {host}:{port} ({exc}); check --host") from None
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restarts need no wait
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        from skillsoup.errors import ServeError

        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port "
                         "or stop the process that holds it") from None
    sock.set_inheritable(True)
    return sock


def run_local(options: ServeOptions, log_level: str = "info", on_ready=None) -> None:
    """Serve until interrupted. On Ctrl-C or SIGTERM uvicorn finishes the requests in flight (5 s at
    most), the app's shutdown stops the engine and closes the registry, and the process ends with the
    signal, as uvicorn does."""
    import uvicorn

    options.check()
    sock = bind_socket(options.host, options.port)
    serving_process()
    try:
        torch_threads(options.threads)
        soup = open_soup(options)
    except BaseException:
        sock.close()
        raise
    try:
        app, _ = build_local(soup, options, on_close=soup.close)
        if on_ready is not None:
            on_ready(soup)
    except BaseException:
        soup.close()
        sock.close()
        raise
    server = uvicorn.Server(uvicorn.Config(app, host=options.host, port=options.port, log_level=log_level,
                                           timeout_graceful_shutdown=5))
    server.run(sockets=[sock])


class ServerThread:
    """A uvicorn server for ``app`` on 127.0.0.1 in a daemon thread: ``with ServerThread(app) as s: s.url``."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning"):
        import uvicorn

        self.app = app
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                                    timeout_graceful_shutdown=2))
        self._thread = threading.Thread(target=self.server.run, name="skillsoup-http", daemon=True)

    @property
    def url(self) -> str:
        sock = self.server.servers[0].sockets[0]
        host, port = sock.getsockname()[:2]
        return f"http://{host}:{port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(10)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
