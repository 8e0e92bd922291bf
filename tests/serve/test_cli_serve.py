"""``skillsoup serve`` as a user starts it: refusals before anything loads, then a real process on
127.0.0.1 that answers the openai client and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest
from serve_helpers import API_KEY, copy_registry

from skillsoup.errors import ServeError
from skillsoup.serve.security import KeyGuard, check_bind, is_loopback

CLI = [sys.executable, "-c", "import sys; from skillsoup.cli import main; sys.exit(main(sys.argv[1:]))"]


@pytest.mark.parametrize(("host", "key", "admin", "ok"), [
    ("127.0.0.1", None, False, True),
    ("::1", None, False, True),
    ("localhost", None, False, True),
    ("0.0.0.0", None, False, False),
    ("10.1.2.3", None, False, False),
    ("myhost.example", None, False, False),
    ("0.0.0.0", "k" * 20, False, True),
    ("127.0.0.1", None, True, False),
    ("127.0.0.1", "k" * 20, True, True),
    ("127.0.0.1", "   ", False, False),
])
def test_bind_policy(host, key, admin, ok):
    if ok:
        check_bind(host, key, admin)
    else:
        with pytest.raises(ServeError):
            check_bind(host, key, admin)


def test_loopback_detection():
    assert is_loopback("127.0.0.2") and is_loopback("[::1]") and not is_loopback("192.168.0.1")


def test_the_key_check_needs_the_bearer_scheme_and_the_exact_key():
    from starlette.requests import Request

    guard = KeyGuard("secret")

    def request(value):
        return Request({"type": "http", "headers": [(b"authorization", value.encode())] if value else []})

    guard.check(request("Bearer secret"))
    guard.check(request("bearer  secret "))
    for bad in ("", "secret", "Basic secret", "Bearer secre", "Bearer secret2"):
        with pytest.raises(Exception, match="API key"):
            guard.check(request(bad))


def test_refuses_a_public_address_or_admin_without_a_key(monkeypatch, capsys):
    from skillsoup.cli import main

    monkeypatch.delenv("SKILLSOUP_API_KEY", raising=False)
    monkeypatch.setattr("skillsoup.serve.server.open_soup", lambda *a: pytest.fail("loaded before refusing"))
    for args in (["--host", "0.0.0.0"], ["--admin"], ["--host", "::"]):
        assert main(["serve", *args]) == 1
        err = capsys.readouterr().err
        assert err.startswith("error:") and "API key" in err and len(err.strip().splitlines()) == 1


def test_a_missing_registry_folder_is_an_error_unless_admin_fills_a_new_one(monkeypatch, capsys, tmp_path):
    from skillsoup.cli import main

    monkeypatch.setattr("skillsoup.serve.server.open_soup", lambda *a: pytest.fail("loaded before refusing"))
    typo = tmp_path / "regsitry"
    assert main(["serve", "--registry", str(typo)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "does not exist" in err and "--admin" in err, err
    assert len(err.strip().splitlines()) == 1 and not typo.exists()  # nothing created


def test_ray_without_a_chroma_server_is_refused_before_ray_starts(monkeypatch, capsys):
    pytest.importorskip("ray")
    import ray

    from skillsoup.cli import main

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started before the options were checked"))
    assert main(["serve", "--ray"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--chroma-url" in err and len(err.strip().splitlines()) == 1, err


def test_serve_run_arguments_become_options():
    pytest.importorskip("ray")
    from skillsoup.serve.ray_app import build_options

    options = build_options({"model": "m", "chroma_url": "http://127.0.0.1:8001", "max_batch": "8", "prefill": "steps",
                             "prefill_pass_ms": "0", "threads": "2", "timeout": "5"})
    assert (options.engine.max_batch, options.engine.prefill, options.engine.prefill_pass_ms) == (8, "steps", 0.0)
    assert (options.threads, options.limits.timeout_s, options.model) == (2, 5.0, "m")
    assert build_options({}).engine.prefill_pass_ms == 50.0
    with pytest.raises(ValueError, match="serve run .*prefill must be one of"):
        build_options({"prefill": "psychic"})
    with pytest.raises(ValueError, match="serve run .*max_batch='many' is not a valid int"):
        build_options({"max_batch": "many"})


def test_the_server_process_hands_the_gil_over_every_millisecond(monkeypatch):
    """run_local's process serves only: its threads (event loop, engine) switch at 1 ms, not 5 ms."""
    import sys

    from skillsoup.serve import server

    seen = []

    def loading(*_):
        seen.append(sys.getswitchinterval())
        raise KeyboardInterrupt  # stop before anything loads or listens

    before = sys.getswitchinterval()
    monkeypatch.setattr(server, "open_soup", loading)
    try:
        with pytest.raises(KeyboardInterrupt):
            server.run_local(server.ServeOptions(port=_free_port()))
    finally:
        sys.setswitchinterval(before)
    assert seen == [pytest.approx(server.SWITCH_INTERVAL_S)] and server.SWITCH_INTERVAL_S < before


def test_a_port_in_use_fails_in_one_line_before_loading(monkeypatch, capsys):
    from skillsoup.cli import main

    monkeypatch.setattr("skillsoup.serve.server.open_soup", lambda *a: pytest.fail("loaded before binding"))
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and f"127.0.0.1:{port}" in err and "--port" in err, err
    assert len(err.strip().splitlines()) == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # a fresh interpreter loads torch, the model and uvicorn (~10 s on 2 busy cores)
def test_a_served_process_answers_and_stops_on_sigterm(tmp_path, demo_registry_template):
    registry = copy_registry(demo_registry_template, tmp_path / "reg")
    port = _free_port()
    env = {**os.environ, "SKILLSOUP_API_KEY": API_KEY}
    proc = subprocess.Popen([*CLI, "serve", "--port", str(port), "--registry", str(registry), "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.3)
        client = openai.OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0)
        reply = client.chat.completions.create(model="skillsoup", messages=[{"role": "user", "content": "US date for 2023-11-05"}])
        assert reply.choices[0].message.content == "11/05/2023"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url + "/v1", api_key="nope", max_retries=0).models.list()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, -signal.SIGTERM), err[-2000:]  # uvicorn ends with the signal it caught
    assert "Application shutdown complete" in err and "Traceback" not in err
    assert "skillsoup serve" in err and "6 skills" in err and "bearer key required" in err
