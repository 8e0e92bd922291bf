"""The official openai client against ``skillsoup serve`` on 127.0.0.1: chat and completions,
streamed and whole, routed and pinned, the ``skillsoup`` routing field, usage, and the greedy answer
equal to ``skillsoup ask``'s."""

from __future__ import annotations

import httpx
import pytest
from serve_helpers import DEMO_SKILLS, QUERIES


def _chat(client, query, model="skillsoup", **kw):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": query}], **kw)


def test_models_list_the_router_and_one_model_per_skill(demo_server):
    client = demo_server.client()
    ids = [m.id for m in client.models.list()]
    assert ids == ["skillsoup"] + [f"skillsoup/{n}" for n in sorted(DEMO_SKILLS)]
    assert client.models.retrieve("skillsoup/date-us").id == "skillsoup/date-us"


@pytest.mark.parametrize("query", list(QUERIES))
def test_greedy_chat_answer_equals_skillsoup_ask(demo_server, query, capsys):
    from skillsoup.cli import main

    reply = _chat(demo_server.client(), query)
    capsys.readouterr()
    assert main(["ask", query, "--registry", str(demo_server.soup.registry.path), "--model",
                 demo_server.soup.model.source]) == 0
    asked = capsys.readouterr().out.rstrip("\n")
    assert reply.choices[0].message.content == asked
    assert reply.choices[0].finish_reason == "stop"
    routed = reply.skillsoup
    assert routed["skills"][0]["name"] == QUERIES[query] and routed["pinned"] is False and routed["router"] == "text"
    assert abs(sum(s["weight"] for s in routed["skills"]) - 1.0) < 1e-6


def test_known_answers_from_the_demo_model(demo_server):
    client = demo_server.client()
    assert _chat(client, "US date for 2023-11-05").choices[0].message.content == "11/05/2023"
    assert _chat(client, "sentiment: the pasta was lovely").choices[0].message.content == "positive"


def test_chat_response_shape_and_usage(demo_server):
    reply = _chat(demo_server.client(), "US date for 2023-11-05")
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-") and reply.model == "skillsoup"
    assert reply.choices[0].message.role == "assistant"
    prompt_ids = demo_server.soup.model.encode(demo_server.soup.registry.get("date-us").render_query("US date for 2023-11-05"))
    assert reply.usage.prompt_tokens == len(prompt_ids)
    assert reply.usage.completion_tokens >= len("11/05/2023")  # characters are tokens here, plus the stop
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert set(reply.skillsoup["timings"]) >= {"route_ms", "queue_ms", "first_token_ms", "total_ms"}


def test_pinned_by_model_name_skips_routing(demo_server):
    reply = _chat(demo_server.client(), "2023-11-05", model="skillsoup/date-us")
    assert reply.choices[0].message.content == "11/05/2023"
    assert reply.skillsoup["skills"] == [{"name": "date-us", "score": 1.0, "weight": 1.0}]
    assert reply.skillsoup["pinned"] is True and reply.skillsoup["router"] is None


def test_pinned_mix_with_weights_through_extra_body(demo_server):
    reply = _chat(demo_server.client(), "hello world", extra_body={"skills": {"upper-case": 3, "sentiment": 1},
                                                                   "mix": "top", "kv": "concat", "layers": "0-1"})
    names = [(s["name"], round(s["weight"], 2)) for s in reply.skillsoup["skills"]]
    assert names == [("upper-case", 0.75), ("sentiment", 0.25)] and reply.skillsoup["mix"] == "top"
    assert reply.skillsoup["kv"] == "concat"  # accepted; a pure Mamba model has no attention KV to mix


def test_router_none_uses_no_skill(demo_server):
    reply = _chat(demo_server.client(), "US date for 2023-11-05", extra_body={"router": "none"})
    assert reply.skillsoup["skills"] == [] and reply.skillsoup["router"] is None


def test_only_the_last_user_message_is_the_query(demo_server):
    client = demo_server.client()
    messages = [{"role": "system", "content": "you are terse"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": [{"type": "text", "text": "US date for 2023-11-05"}]}]
    reply = client.chat.completions.create(model="skillsoup", messages=messages)
    assert reply.choices[0].message.content == _chat(client, "US date for 2023-11-05").choices[0].message.content
    assert reply.skillsoup["ignored_messages"] == 3


def test_streamed_chat_equals_the_whole_answer(demo_server):
    client = demo_server.client()
    query = "set a timer for 5 minutes"
    chunks = list(_chat(client, query, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].skillsoup["skills"][0]["name"] == "timer-call"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == _chat(client, query).choices[0].message.content == "timer(minutes=5)"
    # text chunks: one per token while the reader keeps up, fewer when tokens wait together (a fast
    # engine, a busy loop); tests/serve/test_backend.py checks both ways
    assert 1 <= len([c for c in chunks if c.choices and c.choices[0].delta.content]) <= chunks[-1].usage.completion_tokens
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finals] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_completions_whole_and_streamed_routed_and_pinned(demo_server):
    client = demo_server.client()
    whole = client.completions.create(model="skillsoup", prompt="sentiment: the pasta was lovely")
    assert whole.object == "text_completion" and whole.choices[0].text == "positive"
    assert whole.skillsoup["skills"][0]["name"] == "sentiment"
    pinned = client.completions.create(model="skillsoup/upper-case", prompt="hello world", stream=True)
    pieces = [c.choices[0].text for c in pinned]
    whole_pinned = client.completions.create(model="skillsoup/upper-case", prompt="hello world")
    assert "".join(pieces) == whole_pinned.choices[0].text and len(pieces) > 2


def test_max_tokens_cuts_the_answer_with_length(demo_server):
    reply = _chat(demo_server.client(), "US date for 2023-11-05", max_tokens=3)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 3
    text = reply.choices[0].message.content
    assert text and "11/05/2023".startswith(text) and len(text) <= 3


def test_extra_stop_strings_end_the_answer(demo_server):
    reply = _chat(demo_server.client(), "US date for 2023-11-05", stop=["/20"])
    assert reply.choices[0].message.content == "11/05"


def test_seeded_sampling_repeats(demo_server):
    client = demo_server.client()
    first = _chat(client, "upper case: hello world", temperature=1.0, seed=7).choices[0].message.content
    assert _chat(client, "upper case: hello world", temperature=1.0, seed=7).choices[0].message.content == first


def test_health_and_metrics(demo_server):
    health = httpx.get(demo_server.url + "/health").json()
    assert health["status"] == "ok" and health["backend"] == "local"
    _chat(demo_server.client(), "US date for 2023-11-05")
    text = httpx.get(demo_server.url + "/metrics").text
    for name in ("skillsoup_requests_total", "skillsoup_request_duration_seconds_bucket",
                 "skillsoup_time_to_first_token_seconds_bucket", "skillsoup_completion_tokens_total",
                 "skillsoup_state_cache_hits_total", "skillsoup_batch_rows"):
        assert name in text
    assert demo_server.metric('skillsoup_requests_total{endpoint="chat",status="200"}') >= 1
    assert demo_server.metric("skillsoup_state_cache_hits_total") >= 1  # a skill asked twice comes from memory
