"""The whole runtime on the static-buffer path: SkillSoup.answer with pinned skills over an in-memory
registry (no Chroma, so the lent GPU machine, which has none, runs it too). On CPU the graphs' static
buffers (no graph) must answer exactly as the eager path; on CUDA the kernels with CUDA graphs must
answer as the kernels without them, with the states banked on the GPU."""

from __future__ import annotations

import pytest
import torch

from skillsoup import load_model
from skillsoup.registry.values import capture_skill
from skillsoup.routing.router import Router, RouterParams
from skillsoup.runtime import SkillSoup
from skillsoup.skills.skill import Demonstration, Skill

SKILLS = [
    Skill("timer", "set a timer", (Demonstration("ten minutes", "timer(10m)"), Demonstration("an hour", "timer(1h)"))),
    Skill("shout", "say it loudly", (Demonstration("hello", "HELLO!"), Demonstration("quiet", "QUIET!"))),
]


class MemoryRegistry:
    """What SkillSoup reads from a registry for pinned skills: skills by name and their states."""

    def __init__(self, model):
        self.skills = {s.name: s for s in SKILLS}
        self.states = {s.name: capture_skill(model, s).to(device="cpu") for s in SKILLS}  # as read from files

    def __contains__(self, name) -> bool:
        return name in self.skills

    def get(self, name):
        return self.skills[name]

    def get_many(self, names):
        return [self.skills[n] for n in names]

    def state(self, name, model, **_):
        return self.states[name]


def _soup(model) -> SkillSoup:
    registry = MemoryRegistry(model)
    return SkillSoup(registry, model, router=Router(registry, model, params=RouterParams()))


def _answers(soup) -> list[str]:
    return [soup.answer("ten seconds", skills=pins, max_new_tokens=12).text
            for pins in (["timer"], {"timer": 0.7, "shout": 0.3}, ["shout"])]


def test_runtime_answers_the_same_through_the_static_buffers(mamba_dir):
    eager, static = load_model(mamba_dir, impl="ref"), load_model(mamba_dir, impl="ref")
    static.use_graphs = True
    want, got = _answers(_soup(eager)), _answers(_soup(static))
    assert got == want
    assert static.graphs()._decoders and static.graphs()._sequences


@pytest.mark.gpu
def test_runtime_on_cuda_with_graphs_answers_as_without(mamba_dir):
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    pytest.importorskip("triton")
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        model = load_model(mamba_dir, device="cuda", impl="triton")
        assert model.graphs() is not None, "graphs are on by default for the kernels on CUDA"
        soup = _soup(model)
        with_graphs = _answers(soup)
        model.use_graphs = False
        without = _answers(soup)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved
    assert with_graphs == without
    assert model._graphs.failed is None, model._graphs.failed
    assert soup.cache.device.type == "cuda" and all(s.device.type == "cuda" for s in soup.cache._items.values())
    timings = soup.answer("ten seconds", skills=["timer"], max_new_tokens=8).timings
    assert timings.first_token_ms > 0 and timings.n_tokens > 0
