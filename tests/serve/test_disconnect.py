"""A client that leaves mid-answer frees its batch row at once (streamed or whole), and the others
in the batch go on."""

from __future__ import annotations

import threading

import httpx
import pytest
from serve_helpers import copy_registry, serve_soup, slowed_model, stop

from skillsoup.serve.protocol import Limits

MAX = 4000  # the tiny model never stops early: only the disconnect can end these requests in time


@pytest.fixture(scope="module")
def slow_tiny_model(mamba_dir):
    return slowed_model(mamba_dir)  # MAX tokens take 8 s: longer than any client below waits


@pytest.fixture
def tiny_server(tmp_path, tiny_registry_template, slow_tiny_model):
    served = serve_soup(copy_registry(tiny_registry_template, tmp_path / "reg"), slow_tiny_model,
                        limits=Limits(max_tokens=MAX))
    yield served
    stop(served)


def _long(client, stream: bool):
    return client.chat.completions.create(model="skillsoup", messages=[{"role": "user", "content": "hello"}],
                                          max_tokens=MAX, stream=stream, extra_body={"router": "none"})


def test_a_stream_closed_mid_answer_frees_its_row(tiny_server):
    stream = _long(tiny_server.client(), stream=True)
    chunks = iter(stream)
    for _ in range(3):
        next(chunks)
    assert tiny_server.metric("skillsoup_batch_rows") == 1
    stream.close()  # the connection goes away
    tiny_server.wait_for(lambda: tiny_server.metric("skillsoup_batch_rows") == 0)
    assert tiny_server.metric("skillsoup_requests_cancelled_total") == 1
    assert tiny_server.metric("skillsoup_generated_tokens_total") < MAX / 2  # it stopped, it did not run out
    short = tiny_server.client().chat.completions.create(model="skillsoup", max_tokens=5,
                                                         messages=[{"role": "user", "content": "hi"}])
    assert short.usage.completion_tokens == 5  # the server goes on serving


def test_a_client_that_leaves_a_whole_request_frees_its_row(tiny_server):
    def leave_early():
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(tiny_server.url + "/v1/completions", timeout=httpx.Timeout(10, read=0.5),
                       json={"model": "skillsoup", "prompt": "hello", "max_tokens": MAX, "router": "none"})

    worker = threading.Thread(target=leave_early)
    worker.start()
    worker.join()
    tiny_server.wait_for(lambda: tiny_server.metric("skillsoup_requests_cancelled_total") == 1)
    tiny_server.wait_for(lambda: tiny_server.metric("skillsoup_batch_rows") == 0)


def test_the_other_rows_finish_when_one_client_leaves(tiny_server):
    client = tiny_server.client()
    leaving = _long(client, stream=True)
    next(iter(leaving))
    results = []

    def stay():
        results.append(client.completions.create(model="skillsoup", prompt="hello", max_tokens=40,
                                                  extra_body={"router": "none"}))

    stayers = [threading.Thread(target=stay) for _ in range(3)]
    for t in stayers:
        t.start()
    leaving.close()
    for t in stayers:
        t.join()
    assert [r.usage.completion_tokens for r in results] == [40, 40, 40]
    assert len({r.choices[0].text for r in results}) == 1


def test_a_stream_left_before_its_first_event_still_frees_its_slot():
    """Starlette may cancel a streaming response before its generator ever ran (the client left at
    once): the cleanup (free the row, release the admission slot) must run anyway."""
    import asyncio

    from skillsoup.serve.app import _EventResponse

    calls = []

    async def never():
        await asyncio.sleep(3600)
        yield "data: {}\n\n"

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        pass

    response = _EventResponse(never(), cleanup=lambda: calls.append("cleaned"))
    asyncio.run(response({"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send))
    assert calls == ["cleaned"]
