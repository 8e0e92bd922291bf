"""The OpenAI request and response shapes, written once, and how a request becomes a skillsoup query.

How chat messages become the query (one rule): the query is the LAST message, which must come from
the user; its content is a string or a list of text parts (joined with newlines). Earlier messages
(system, developer, previous turns) are checked but not read: every answer starts from the skills'
state, which holds the context a skill needs, and the query is rendered with the top skill's
template exactly as ``skillsoup ask`` renders it. The response's ``skillsoup.ignored_messages`` says
how many messages were left out. For ``/v1/completions`` the query is the prompt.

Models: ``skillsoup`` routes each request (``router``: text, state, hybrid, or none for no skill);
``skillsoup/<skill>`` pins one skill. Extra request fields (the openai client's ``extra_body``):
``skills`` ({name: weight} or a list of names: pin a mix), ``router``, ``mix`` (mix or top), ``kv`` (top or
concat: hybrid models' attention KV), ``layers`` ("0-1,3" or a list of indices), ``top_k``. ``temperature`` defaults to 0 (greedy, as
``skillsoup ask``), ``max_tokens`` to 64.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from skillsoup.errors import RoutingError
from skillsoup.routing import MAX_QUERY_CHARS, check_query
from skillsoup.runtime import Plan
from skillsoup.serve.errors import invalid, model_not_found, too_large

MODEL = "skillsoup"
UNSUPPORTED = {"tools", "tool_choice", "functions", "suffix", "logprobs", "echo", "n", "best_of", "logit_bias",
               "presence_penalty", "frequency_penalty"}
ROUTERS = ("text", "state", "hybrid", "none")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for."""

    max_body_bytes: int = 1 << 20
    max_messages: int = 64
    max_tokens: int = 1024  # the most max_tokens a request may ask for
    default_max_tokens: int = 64  # when a request gives none (as ``skillsoup ask``); at most max_tokens
    timeout_s: float = 60.0  # from arrival to the last token
    max_stop: int = 4

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_messages", "max_tokens", "max_stop"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not 0 <= self.default_max_tokens:
            raise ValueError(f"default_max_tokens must be >= 0, got {self.default_max_tokens!r}")
        object.__setattr__(self, "default_max_tokens", min(self.default_max_tokens, self.max_tokens))
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s!r}")


# ---- requests ------------------------------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Union[str, list[TextPart], None] = None


class StreamOptions(_Strict):
    include_usage: bool = False


class _Common(_Strict):
    model: str
    max_tokens: int | None = Field(None, ge=1)  # as OpenAI and skillsoup ask -n: an answer has a token
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: Union[str, list[str], None] = None
    n: int | None = Field(None, ge=1, le=1)
    presence_penalty: float | None = Field(None, ge=0, le=0)
    frequency_penalty: float | None = Field(None, ge=0, le=0)
    logit_bias: dict[str, float] | None = Field(None, max_length=0)
    user: str | None = None
    # skillsoup's own fields
    skills: Union[dict[str, float], list[str], None] = None
    router: Literal["text", "state", "hybrid", "none"] | None = None
    mix: Literal["mix", "top"] | None = None
    kv: Literal["top", "concat"] | None = None  # hybrid models' attention KV policy
    layers: Union[str, list[int], None] = None
    top_k: int | None = Field(None, ge=1, le=64)


class ChatRequest(_Common):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    tools: None = None
    tool_choice: None = None
    functions: None = None
    response_format: dict | None = None


class CompletionRequest(_Common):
    prompt: Union[str, list[str]]
    echo: bool | None = None
    suffix: None = None
    best_of: int | None = Field(None, ge=1, le=1)
    logprobs: None = None


@dataclass(frozen=True)
class RequestSpec:
    """What the server does for one request, in the library's terms."""

    query: str
    skills: dict[str, float] | list[str] | None  # pinned; None: route (or no skill)
    routing: bool
    router: str
    top_k: int | None
    mix: str
    layers: str | list[int] | None
    sampling: dict  # max_new_tokens, temperature, top_p, seed
    stop: tuple[str, ...]
    ignored_messages: int = 0
    kv: str = "top"
    arrived: float = field(default_factory=time.monotonic)

    def prepare_options(self) -> dict:
        """What ``SkillSoup.prepare`` needs beyond the plan, as plain values (they may travel to a replica)."""
        return {"mix": self.mix, "kv": self.kv, "layers": self.layers, "stop": list(self.stop),
                "sampling": dict(self.sampling)}


def parse(kind: str, body: bytes, limits: Limits) -> ChatRequest | CompletionRequest:
    """The JSON body, validated; 413 past the limits on messages, 422 for anything malformed."""
    cls = ChatRequest if kind == "chat" else CompletionRequest
    try:
        request = cls.model_validate_json(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "json_invalid":
            raise invalid(f"the body is not valid JSON: {err['msg']}", code="invalid_json") from None
        if err["loc"] and err["loc"][0] in UNSUPPORTED:
            raise invalid(f"{where}: this server supports only its default ({err['msg']})", param=where) from None
        raise invalid(f"{where or 'body'}: {err['msg']}", param=where or None) from None
    if isinstance(request, ChatRequest) and len(request.messages) > limits.max_messages:
        raise too_large(f"{len(request.messages)} messages; the server takes at most {limits.max_messages}", "messages")
    if request.logprobs or getattr(request, "echo", None):
        name = "logprobs" if request.logprobs else "echo"
        raise invalid(f"{name}: this server supports only its default (off)", param=name)
    return request


def spec_of(request: ChatRequest | CompletionRequest, limits: Limits) -> RequestSpec:
    """The model name, query rule, limits and sampling options of a parsed request."""
    query, ignored = _query(request)
    try:
        query = check_query(query)
    except RoutingError as exc:
        refuse = too_large if len(query) > MAX_QUERY_CHARS else invalid
        raise refuse(str(exc), "messages" if ignored >= 0 else "prompt") from None
    skills = request.skills
    routing, router = True, request.router or "text"
    if request.model.startswith(MODEL + "/"):
        if skills is not None:
            raise invalid("give a skill either in the model name or in 'skills', not both", "skills")
        skills = [request.model.split("/", 1)[1]]
    elif request.model != MODEL:
        raise model_not_found(request.model)
    if router == "none":
        routing, router = False, "text"
    max_tokens, field = request.max_tokens, "max_tokens"
    if isinstance(request, ChatRequest) and request.max_completion_tokens is not None:
        max_tokens, field = request.max_completion_tokens, "max_completion_tokens"
    if max_tokens is None:
        max_tokens = limits.default_max_tokens
    if max_tokens > limits.max_tokens:
        raise invalid(f"{field} is {max_tokens}; this server allows at most {limits.max_tokens}", field)
    stop = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
    if len(stop) > limits.max_stop or not all(stop):
        raise invalid(f"stop takes at most {limits.max_stop} non-empty strings", "stop")
    if isinstance(request, ChatRequest) and request.response_format not in (None, {"type": "text"}):
        raise invalid("only response_format {'type': 'text'} is supported", "response_format")
    sampling = {"max_new_tokens": max_tokens, "temperature": request.temperature or 0.0,
                "top_p": 1.0 if request.top_p is None else request.top_p, "seed": request.seed}
    return RequestSpec(query, skills, routing, router, request.top_k, request.mix or "mix", request.layers,
                       sampling, tuple(stop), max(ignored, 0), request.kv or "top")


def _query(request: ChatRequest | CompletionRequest) -> tuple[str, int]:
    """(query, messages left out); -1 for a completion."""
    if isinstance(request, CompletionRequest):
        prompt = request.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise invalid("prompt takes one string (or a list of exactly one)", "prompt")
            prompt = prompt[0]
        return prompt, -1
    last = request.messages[-1]
    if last.role != "user":
        raise invalid(f"the last message must come from the user (it is the query), not {last.role!r}", "messages")
    content = last.content
    text = content if isinstance(content, str) else "\n".join(p.text for p in content or [])
    return text, len(request.messages) - 1


# ---- responses -----------------------------------------------------------------------------------
def new_id(kind: str) -> str:
    return f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex}"


def skillsoup_field(plan: Plan, spec: RequestSpec, extra: dict | None = None) -> dict:
    """The routing field every response carries."""
    out = {"skills": [{"name": m.name, "score": m.score, "weight": m.weight} for m in plan.matches],
           "pinned": plan.pinned, "router": spec.router if spec.routing and not plan.pinned else None,
           "mix": spec.mix, "kv": spec.kv, "ignored_messages": spec.ignored_messages}
    out.update(extra or {})
    return out


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def response(kind: str, rid: str, created: int, model: str, text: str, finish: str, use: dict, soup: dict) -> dict:
    if kind == "chat":
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                  "finish_reason": finish}
        obj = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        obj = "text_completion"
    return {"id": rid, "object": obj, "created": created, "model": model, "choices": [choice], "usage": use,
            "skillsoup": soup}


def chunk(kind: str, rid: str, created: int, model: str, text: str | None, finish: str | None = None,
          soup: dict | None = None, use: dict | None = None, first: bool = False) -> dict:
    """One streamed event. ``use`` alone: the closing usage chunk (no choices)."""
    if kind == "chat":
        delta = {"role": "assistant", "content": text or ""} if first else ({"content": text} if text else {})
        choices = [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
        obj = "chat.completion.chunk"
    else:
        choices = [{"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}]
        obj = "text_completion"
    out = {"id": rid, "object": obj, "created": created, "model": model, "choices": [] if use else choices}
    if use is not None:
        out["usage"] = use
    if soup is not None:
        out["skillsoup"] = soup
    return out
