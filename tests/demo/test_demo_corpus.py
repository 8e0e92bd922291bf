"""The demo corpus: deterministic, outputs a function of inputs, and held-out inputs never trained on."""

from __future__ import annotations

import random
import re

import pytest

from skillsoup.demo import corpus
from skillsoup.skillfiles import NAME_PATTERN
from skillsoup.demo.tokenizer import is_encodable
from skillsoup.skill import Skill


def test_sixteen_named_skills_in_families():
    names = [s.name for s in corpus.SKILLS]
    assert len(names) == 16 and len(set(names)) == 16
    for name in names:
        assert re.fullmatch(NAME_PATTERN, name), name
    # ambiguity is the point: several families hold more than one skill with the same inputs
    shared = {f: n for f, n in corpus.FAMILIES.items() if len(n) > 1}
    assert set(shared) >= {"phrase", "date", "contact", "review"}


def test_sampling_is_deterministic():
    for skill in corpus.SKILLS:
        assert corpus.sample_pairs(skill, 5, "heldout", seed=3) == corpus.sample_pairs(skill.name, 5, "heldout", seed=3)
    a = [corpus.episode(random.Random(7), 4) for _ in range(3)]
    b = [corpus.episode(random.Random(7), 4) for _ in range(3)]
    assert a == b


def test_a_family_shares_inputs_but_not_outputs():
    for family, names in corpus.FAMILIES.items():
        inputs = [[p.input for p in corpus.sample_pairs(n, 10, "heldout", 0)] for n in names]
        assert all(i == inputs[0] for i in inputs), family
        if len(names) > 1:
            outputs = [tuple(p.output for p in corpus.sample_pairs(n, 10, "heldout", 0)) for n in names]
            assert len(set(outputs)) == len(names), f"{family}: two skills answer alike"


@pytest.mark.parametrize("split", ["train", "demo", "heldout"])
def test_splits_are_disjoint_and_respected(split):
    for skill in corpus.SKILLS:
        pairs = corpus.sample_pairs(skill, 40, split, seed=1)
        assert len({p.input for p in pairs}) == 40
        assert all(corpus.split_of(p.input) == split for p in pairs)


def test_training_stream_never_sees_heldout_or_demo_inputs():
    """Every input the training episodes draw (2,000 episodes) lies in the train split, and none of
    the evaluation inputs (held-out tests, skill-file demonstrations) appears among them."""
    rng = random.Random(0)
    seen = set()
    for _ in range(2000):
        _, demos, query, _ = corpus.episode(rng, 8)
        seen.update(d.input for d in demos)
        seen.add(query)
    assert {corpus.split_of(t) for t in seen} == {"train"}
    for skill in corpus.SKILLS:
        evaluated = corpus.skill_object(skill.name, n_demos=8, n_tests=50)
        assert not seen & {d.input for d in evaluated.tests + evaluated.demonstrations}


def test_outputs_are_a_function_of_the_input():
    for skill in corpus.SKILLS:
        for pair in corpus.sample_pairs(skill, 30, "train", seed=2):
            assert skill.answer(pair.input) == pair.output
            assert pair.output and "\n" not in pair.output and len(pair.output) <= 64
            assert is_encodable(pair.input) and is_encodable(pair.output)


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("upper-case", "quiet river stone", "QUIET RIVER STONE"),
    ("acronym", "quiet river stone", "QRS"),
    ("word-count", "quiet river stone", "3"),
    ("snake-case", "quiet river stone", "quiet_river_stone"),
    ("date-us", "2024-03-12", "03/12/2024"),
    ("date-long", "2024-03-02", "2 March 2024"),
    ("date-quarter", "2024-11-30", "Q4 2024"),
    ("contact-json", "Ana Souza <ana.souza@acme.io>", '{"name": "Ana Souza", "email": "ana.souza@acme.io"}'),
    ("contact-name", "reach Ben Kim via bkim@lab.edu", "Ben Kim"),
    ("email-domain", "contact Ben Kim at bkim@lab.edu", "lab.edu"),
    ("sentiment", "the soup was really great", "positive"),
    ("review-topic", "our waiter seemed so-so", "service"),
    ("timer-call", "set a timer for 5 minutes", "timer(minutes=5)"),
    ("timer-call", "start a 1 hour timer", "timer(hours=1)"),
    ("reminder-call", "remind me to call mom at 6pm", 'remind(task="call mom", time="18:00")'),
    ("reminder-call", "at 12:30am remind me to lock the door", 'remind(task="lock the door", time="00:30")'),
    ("metric-convert", "12 km", "12000 m"),
    ("add-numbers", "48 + 57", "105"),
])
def test_skill_functions(name, text, expected):
    assert corpus.get_skill(name).answer(text) == expected


def test_rendered_episode_marks_the_outputs():
    skill = corpus.get_skill("timer-call")
    pairs = corpus.sample_pairs(skill, 3, "train", 0)
    text, spans = corpus.render_episode(skill, pairs)
    as_skill = Skill(skill.name, skill.description, tuple(pairs), skill.template)
    assert text == as_skill.render_demonstrations()
    for (start, end), pair in zip(spans, pairs):
        assert text[start:end] == " " + pair.output + "\n"
        assert text[:start].endswith(as_skill.render_query(pair.input))


def test_skill_objects_and_files(tmp_path):
    from skillsoup.skillfiles import load_skills

    skill = corpus.skill_object("date-long", n_demos=4, n_tests=6)
    assert len(skill.demonstrations) == 4 and len(skill.tests) == 6
    assert {corpus.split_of(d.input) for d in skill.demonstrations} == {"demo"}
    assert {corpus.split_of(d.input) for d in skill.tests} == {"heldout"}
    with pytest.raises(ValueError):
        corpus.skill_object("date-long", split="heldout")
    paths = corpus.write_skill_files(tmp_path, n_demos=4, n_tests=3)
    loaded = {s.name: s for s in load_skills(paths)}
    assert set(loaded) == {s.name for s in corpus.SKILLS}
    assert loaded["date-long"] == corpus.skill_object("date-long", n_demos=4, n_tests=3)


def test_zero_shot_prompts_cannot_tell_a_family_apart():
    """Skills of one family share their template, so a query alone reads the same for all of them:
    only demonstrations (or an injected state) say which skill is meant."""
    for family, names in corpus.FAMILIES.items():
        skills = [corpus.skill_object(n, n_demos=1, n_tests=3) for n in names]
        assert len({s.template for s in skills}) == 1, family
        assert len({tuple(s.render_query(t.input) for t in s.tests) for s in skills}) == 1, family
