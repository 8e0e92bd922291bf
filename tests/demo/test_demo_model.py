"""The shipped demo checkpoint: loads like any checkpoint, stays small, answers held-out queries
from demonstrations, and an injected skill state answers exactly as the demonstrations in the prompt."""

from __future__ import annotations

import pytest

from skillsoup.demo import DEMO_MODEL_DIR, corpus

MAX_BYTES = 20 * 2**20
# skills and threshold measured with scripts/eval_demo_model.py on the shipped model (see README)
CHECKED_SKILLS = ("date-us", "date-quarter", "word-count", "timer-call")
MIN_ACCURACY = 0.9
N_TESTS = 10
FORMAT_INTENTS = ("quarter", "mood", "timer")  # zero-shot picks one format; demonstrations pick either
MIN_ROUTED = 0.85


@pytest.fixture(scope="module")
def demo_model():
    """The shipped model, run on one torch thread: its batch-1 prompts are tiny ops, and two threads
    on two busy shared cores made them 30x slower (OpenMP threads waiting on each other)."""
    import torch

    from skillsoup import load_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model(DEMO_MODEL_DIR)
    torch.set_num_threads(threads)


def _answer(model, skill, query, *, demos_k=0, state=None):
    ids = (model.encode(skill.render_demonstrations(demos_k)) if demos_k else []) + model.encode(skill.render_query(query))
    return "".join(model.generate(ids, state, stop=skill.stop_strings(), max_new_tokens=64)).strip()


def test_checkpoint_is_complete_and_small():
    names = {p.name for p in DEMO_MODEL_DIR.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    size = sum(p.stat().st_size for p in DEMO_MODEL_DIR.iterdir() if p.is_file())
    assert size <= MAX_BYTES, f"demo model is {size / 2**20:.1f} MiB, the package allows 20"


def test_loads_as_a_mamba_model_with_its_tokenizer(demo_model):
    assert demo_model.arch == "mamba"
    text = corpus.render_episode(corpus.get_skill("contact-json"), corpus.sample_pairs("contact-json", 2, "demo"))[0]
    assert demo_model.decode(demo_model.encode(text)) == text


@pytest.mark.parametrize("name", CHECKED_SKILLS)
def test_four_demonstrations_answer_heldout_queries(demo_model, name):
    skill = corpus.skill_object(name, n_demos=4, n_tests=N_TESTS)
    state = demo_model.capture(demo_model.encode(skill.render_demonstrations()))
    right = 0
    for test in skill.tests:
        in_prompt = _answer(demo_model, skill, test.input, demos_k=4)
        from_state = _answer(demo_model, skill, test.input, state=state)
        assert from_state == in_prompt, f"{name}: injected state and prompt disagree on {test.input!r}"
        right += in_prompt == test.output
    assert right / N_TESTS >= MIN_ACCURACY, f"{name}: {right}/{N_TESTS} held-out answers right with 4 demonstrations"


@pytest.mark.parametrize("intent", FORMAT_INTENTS)
def test_the_demonstrations_choose_the_answer_format(demo_model, intent):
    """The same queries, demonstrations of two formats of one intent: each state makes the model
    write its own format (what zero-shot can only guess)."""
    names = corpus.INTENT_VARIANTS[intent][:2]
    skills = [corpus.skill_object(name, n_demos=4, n_tests=N_TESTS) for name in names]
    assert [t.input for t in skills[0].tests] == [t.input for t in skills[1].tests]
    for skill in skills:
        state = demo_model.capture(demo_model.encode(skill.render_demonstrations()))
        right = sum(_answer(demo_model, skill, t.input, state=state) == t.output for t in skill.tests)
        assert right / N_TESTS >= MIN_ACCURACY, f"{skill.name}: {right}/{N_TESTS} in its own format"


def test_the_text_router_finds_the_skill_from_the_query(demo_model, tmp_path):
    """The query names the intent, so routing from its text alone picks the bundled skill."""
    from skillsoup.registry import SkillRegistry
    from skillsoup.routing.router import Router

    skills = [corpus.skill_object(s.name, n_demos=8, n_tests=4) for s in corpus.SKILLS]
    with SkillRegistry.open(tmp_path / "registry") as registry:
        registry.add(skills, demo_model)
        router = Router(registry, demo_model)
        tops = [(router.route(t.input) or [None])[0] for s in skills for t in s.tests]
    right = sum(m is not None and m.name == s.name for m, s in zip(tops, [s for s in skills for _ in s.tests]))
    assert right / len(tops) >= MIN_ROUTED, f"{right}/{len(tops)} queries routed to their skill"
