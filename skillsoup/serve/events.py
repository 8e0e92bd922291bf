"""What a request hears from the engine: text pieces, then one Done or Failed. Plain dataclasses
that travel as dicts (``event_dict`` / ``event_from_dict``) between a Ray replica and the front."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Piece:
    text: str
    kind: str = "piece"


@dataclass(frozen=True)
class Done:
    reason: str  # "stop" (a stop string or EOS) or "length" (max_new_tokens)
    prompt_tokens: int
    completion_tokens: int
    timings: dict = field(default_factory=dict)  # milliseconds: route, load/mix, queue, prefill, first token, total
    extra: dict = field(default_factory=dict)  # what a transport adds (the Ray replica that answered)
    kind: str = "done"


@dataclass(frozen=True)
class Failed:
    code: str  # "timeout" or "server_error"
    message: str
    kind: str = "failed"


Event = Piece | Done | Failed
_KINDS = {"piece": Piece, "done": Done, "failed": Failed}


def event_dict(event: Event) -> dict:
    return asdict(event)


def event_from_dict(data: dict) -> Event:
    return _KINDS[data["kind"]](**data)
