"""Every error status in OpenAI's shape, seen through the official client: 401, 404 (model, skill),
413 (body, messages), 422 (bad fields, limits), 429 (full), 504 (time limit, also mid-stream)."""

from __future__ import annotations

import httpx
import openai
import pytest
from serve_helpers import API_KEY, copy_registry, serve_soup, slowed_model, stop

from skillsoup.serve.protocol import Limits

LONG = {"extra_body": {"router": "none"}, "max_tokens": 1000}  # the tiny model never stops early


@pytest.fixture(scope="module")
def guarded(tmp_path_factory, demo_registry_template, demo_model):
    """A server with an API key and small limits."""
    limits = Limits(max_body_bytes=64 * 1024, max_messages=4, max_tokens=32)
    served = serve_soup(copy_registry(demo_registry_template, tmp_path_factory.mktemp("guarded") / "reg"), demo_model,
                        api_key=API_KEY, limits=limits)
    yield served
    stop(served)


@pytest.fixture(scope="module")
def tiny_small(tmp_path_factory, tiny_registry_template, mamba_dir):
    """The tiny model with room for one request and a 1.5 s time limit. Its own copy decodes at most
    500 tokens a second, so a long request outlives the limit however fast the kernels are."""
    from skillsoup.serve.engine import EngineConfig

    model = slowed_model(mamba_dir)
    served = serve_soup(copy_registry(tiny_registry_template, tmp_path_factory.mktemp("small") / "reg"), model,
                        engine=EngineConfig(max_batch=1), max_queue=0, limits=Limits(timeout_s=1.5, max_tokens=4000))
    yield served
    stop(served)


def _chat(client, query="US date for 2023-11-05", **kw):
    return client.chat.completions.create(model=kw.pop("model", "skillsoup"),
                                          messages=kw.pop("messages", [{"role": "user", "content": query}]), **kw)


def _error(excinfo, status: int, code: str | None = None) -> dict:
    exc = excinfo.value
    assert exc.status_code == status, exc
    body = exc.body
    assert set(body) == {"message", "type", "param", "code"} and body["message"]
    if code is not None:
        assert body["code"] == code, body
    return body


def test_401_without_or_with_a_wrong_key(guarded):
    for key in ("wrong-key", "x" * 200):
        with pytest.raises(openai.AuthenticationError) as e:
            _chat(guarded.client(api_key=key))
        _error(e, 401, "invalid_api_key")
    reply = httpx.post(guarded.url + "/v1/chat/completions", json={})
    assert reply.status_code == 401 and reply.headers["www-authenticate"] == "Bearer"
    assert httpx.get(guarded.url + "/v1/models").status_code == 401
    assert httpx.get(guarded.url + "/health").status_code == 200  # liveness stays open
    assert _chat(guarded.client(api_key=API_KEY)).choices[0].message.content == "11/05/2023"


def test_404_unknown_model_or_skill(guarded):
    client = guarded.client(api_key=API_KEY)
    with pytest.raises(openai.NotFoundError) as e:
        _chat(client, model="gpt-4o")
    assert _error(e, 404, "model_not_found")["param"] == "model"
    with pytest.raises(openai.NotFoundError) as e:
        _chat(client, model="skillsoup/no-such-skill")
    assert "no-such-skill" in _error(e, 404, "skill_not_found")["message"]
    with pytest.raises(openai.NotFoundError) as e:
        _chat(client, extra_body={"skills": {"date-us": 1, "nope": 1}})
    _error(e, 404, "skill_not_found")
    with pytest.raises(openai.NotFoundError) as e:
        client.models.retrieve("skillsoup/nope")
    _error(e, 404, "model_not_found")


def test_413_body_and_messages(guarded):
    client = guarded.client(api_key=API_KEY)
    with pytest.raises(openai.APIStatusError) as e:
        _chat(client, "a" * 70_000)
    _error(e, 413, "request_too_large")
    with pytest.raises(openai.APIStatusError) as e:
        _chat(client, messages=[{"role": "user", "content": "hi"}] * 5)
    assert _error(e, 413)["param"] == "messages"
    chunked = httpx.post(guarded.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {API_KEY}"},
                         content=iter([b"{" + b" " * 40_000, b" " * 40_000 + b"}"]))  # no Content-Length
    assert chunked.status_code == 413


@pytest.mark.parametrize(("kw", "param"), [
    ({"max_tokens": 33}, "max_tokens"),  # over the server's limit
    ({"max_completion_tokens": 33}, "max_completion_tokens"),  # the field the client sent is named
    ({"max_tokens": 0}, "max_tokens"),  # as OpenAI and skillsoup ask -n 0
    ({"temperature": -1}, "temperature"),
    ({"n": 2}, "n"),
    ({"messages": [{"role": "assistant", "content": "hi"}]}, "messages"),
    ({"messages": [{"role": "user", "content": "   "}]}, "messages"),
    ({"extra_body": {"router": "psychic"}}, "router"),
    ({"extra_body": {"kv": "merge"}}, "kv"),
    ({"extra_body": {"skills": {"date-us": -1}}}, None),
    ({"extra_body": {"layers": "9-12"}}, None),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
])
def test_422_bad_fields(guarded, kw, param):
    with pytest.raises(openai.UnprocessableEntityError) as e:
        _chat(guarded.client(api_key=API_KEY), **kw)
    body = _error(e, 422)
    if param is not None:
        assert body["param"] is not None and body["param"].startswith(param), body


def test_422_for_a_body_that_is_not_json(guarded):
    reply = httpx.post(guarded.url + "/v1/completions", content=b"{not json",
                       headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    assert reply.status_code == 422 and reply.json()["error"]["code"] == "invalid_json"


def test_429_when_the_batch_and_queue_are_full(tiny_small):
    client = tiny_small.client()
    first = _chat(client, "hello", stream=True, **LONG)
    next(iter(first))  # it holds the only row
    with pytest.raises(openai.RateLimitError) as e:
        _chat(client, "hello again")
    _error(e, 429, "server_busy")
    assert e.value.response.headers["retry-after"] == "1"
    first.close()
    tiny_small.wait_for(lambda: tiny_small.metric("skillsoup_batch_rows") == 0)
    assert _chat(client, "hello", max_tokens=2).choices[0].finish_reason == "length"  # room again


def test_504_past_the_time_limit_whole_and_streamed(tiny_small):
    client = tiny_small.client()
    with pytest.raises(openai.APIStatusError) as e:
        _chat(client, "hello", **LONG | {"max_tokens": 4000})
    _error(e, 504, "timeout")
    with pytest.raises(openai.APIError, match="time limit"):
        for _ in _chat(client, "hello", stream=True, **LONG | {"max_tokens": 4000}):
            pass
    assert tiny_small.metric("skillsoup_requests_timed_out_total") == 2
    tiny_small.wait_for(lambda: tiny_small.metric("skillsoup_batch_rows") == 0)


def test_unknown_routes_answer_in_openai_shape(guarded):
    reply = httpx.get(guarded.url + "/v1/nothing-here", headers={"Authorization": f"Bearer {API_KEY}"})
    assert reply.status_code == 404 and reply.json()["error"]["code"] == "not_found"
