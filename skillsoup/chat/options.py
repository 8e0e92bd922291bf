"""ChatOptions: what the chat's next answer is made with, checked where it is set."""

from __future__ import annotations

import math
from dataclasses import dataclass

from skillsoup.errors import GenerationError, MixError, RoutingError
from skillsoup.models.generation import MAX_NEW_TOKENS
from skillsoup.routing.router import ROUTERS
from skillsoup.runtime import KV_MODES, MIX_MODES
from skillsoup.states.mixing import parse_layers


@dataclass(frozen=True)
class ChatOptions:
    """What the next answer is made with; checked where it is set."""

    router: str = "text"
    mix: str = "mix"  # conv policy
    kv: str = "top"  # attention KV policy (hybrid models)
    layers: str = "all"  # "all" or ranges like "0-1,3"; checked against the model when used
    max_new_tokens: int = 64
    temperature: float = 0.0
    pins: tuple[tuple[str, float], ...] = ()  # pinned skills (name, weight); empty: route

    def __post_init__(self) -> None:
        if self.router not in ROUTERS:
            raise RoutingError(f"unknown router {self.router!r}; choose one of {', '.join(ROUTERS)}")
        if self.mix not in MIX_MODES or self.kv not in KV_MODES:
            raise MixError(f"unknown mixing mode {self.mix!r} / kv {self.kv!r}; choose {MIX_MODES} / {KV_MODES}")
        parse_layers(self.layers)
        n = self.max_new_tokens
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_NEW_TOKENS:
            raise GenerationError(f"max tokens must be an integer from 1 to {MAX_NEW_TOKENS}, got {n!r}")
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not (math.isfinite(t) and t >= 0):
            raise GenerationError(f"temperature must be a finite number >= 0 (0 = greedy), got {t!r}")
