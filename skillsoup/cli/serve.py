"""``skillsoup serve``: the OpenAI-compatible server, in this process or on Ray Serve replicas."""

from __future__ import annotations

from typing import Annotated, Optional

import typer
from rich.markup import escape

from skillsoup.cli import app
from skillsoup.cli.common import (
    ChromaUrlOpt, ModelOpt, RegistryOpt, err_console, one_of, quiet_libraries, require_registry,
)
from skillsoup.errors import ServeError


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on; other than loopback needs an API key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    model: ModelOpt = None,
    registry: RegistryOpt = None,
    chroma_url: ChromaUrlOpt = None,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", envvar="SKILLSOUP_API_KEY", show_default=False,
        help="Bearer key clients must send (prefer $SKILLSOUP_API_KEY: a command line is visible to other users).",
    )] = None,
    admin: Annotated[bool, typer.Option("--admin", help="Allow adding and removing skills over HTTP (needs a key).")] = False,
    max_batch: Annotated[int, typer.Option(min=1, help="Requests decoded together.")] = 32,
    max_queue: Annotated[int, typer.Option(min=0, help="Requests waiting beyond the batch; more are answered 429.")] = 64,
    timeout: Annotated[float, typer.Option(min=0.001, help="Seconds a request may take, from arrival to its last token.")] = 60.0,
    max_tokens_limit: Annotated[int, typer.Option(min=1, help="The most max_tokens a request may ask for.")] = 1024,
    max_body_bytes: Annotated[int, typer.Option(min=1, help="The largest request body.")] = 1 << 20,
    max_messages: Annotated[int, typer.Option(min=1, help="The most chat messages in a request.")] = 64,
    prefill: Annotated[str, typer.Option(callback=one_of("auto", "parallel", "steps"),
                                         help="auto, parallel or steps (see docs/serve.md).")] = "auto",
    prefill_pass_ms: Annotated[float, typer.Option(min=0, help="Least work (ms) one prompt pass may take before "
                                                   "waiting requests are left for the next one; 0: no cap.")] = 50.0,
    threads: Annotated[Optional[int], typer.Option(help="Torch threads for the model (default: half the cores).")] = None,
    ray: Annotated[bool, typer.Option("--ray", help="Run replicas on Ray Serve (pip install 'skillsoup\\[ray]').")] = False,
    replicas: Annotated[int, typer.Option(min=1, help="Ray Serve replicas of the model.")] = 2,
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster to join (default: start one on 127.0.0.1).")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn's log level.")] = "info",
) -> None:
    """Serve the OpenAI API (chat and completions, streaming) with skill routing and batching."""
    from skillsoup.serve.engine import EngineConfig
    from skillsoup.serve.protocol import Limits
    from skillsoup.serve.server import ServeOptions, run_local

    try:
        options = ServeOptions(
            host=host, port=port, model=model, registry=registry, chroma_url=chroma_url, api_key=api_key, admin=admin,
            limits=Limits(max_body_bytes=max_body_bytes, max_messages=max_messages, max_tokens=max_tokens_limit,
                          timeout_s=timeout),
            engine=EngineConfig(max_batch=max_batch, prefill=prefill, prefill_pass_ms=prefill_pass_ms), max_queue=max_queue, threads=threads,
        )
    except ValueError as exc:  # the options above are range-checked by the parser already
        raise ServeError(str(exc)) from None
    options.check()  # before loading anything: an unsafe address fails at once
    if not admin:  # with --admin, a new registry is filled over HTTP
        require_registry(registry, chroma_url, "; with --admin, serve starts an empty one to fill over HTTP")
    quiet_libraries()

    def ready(soup) -> None:
        n = len(soup.registry.names())
        key = "bearer key required" if api_key else "no key (loopback only)"
        err_console.print(f"[bold]skillsoup serve[/] · {escape(soup.model.source)} · {n} skill{'s' * (n != 1)} · "
                          f"http://{escape(host)}:{port}/v1 · {key}{' · admin' if admin else ''}", soft_wrap=True)

    if ray:
        from skillsoup.serve.ray_app import run_ray

        run_ray(options, replicas=replicas, address=ray_address)
    else:
        run_local(options, log_level=log_level, on_ready=ready)
