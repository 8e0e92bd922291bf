"""The demo corpus: deterministic, outputs a function of inputs, and held-out inputs never trained on."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from skillsoup.demo import corpus
from skillsoup.demo.skill_files import write_skill_files
from skillsoup.demo.tokenizer import is_encodable
from skillsoup.skills.loader import NAME_PATTERN
from skillsoup.skills.skill import Skill


def test_sixteen_bundled_skills_and_their_alternates():
    names = [s.name for s in corpus.ALL_SKILLS]
    assert len(corpus.SKILLS) == 16 and len(set(names)) == len(names)
    for name in names:
        assert re.fullmatch(NAME_PATTERN, name), name
    # ambiguity is the point: every intent has two answer formats, exactly one of them bundled
    for intent, variants in corpus.INTENT_VARIANTS.items():
        assert len(variants) == 2, intent
        assert [corpus.get_skill(v).bundled for v in variants].count(True) == 1, intent
    # and several intents share their kind of data (a family)
    shared = {f: n for f, n in corpus.FAMILIES.items() if len(n) > 1}
    assert set(shared) >= {"phrase", "date", "contact", "review"}


def test_sampling_is_deterministic():
    for skill in corpus.ALL_SKILLS:
        assert corpus.sample_pairs(skill, 5, "heldout", seed=3) == corpus.sample_pairs(skill.name, 5, "heldout", seed=3)
    a = [corpus.episode(random.Random(7), 4) for _ in range(3)]
    b = [corpus.episode(random.Random(7), 4) for _ in range(3)]
    assert a == b


def test_variants_of_an_intent_share_queries_but_not_answers():
    """A query alone cannot tell the formats of one intent apart: only demonstrations can."""
    for intent, names in corpus.INTENT_VARIANTS.items():
        skills = [corpus.skill_object(n, n_demos=4, n_tests=10) for n in names]
        assert len({tuple(t.input for t in s.tests) for s in skills}) == 1, intent
        assert len({s.template for s in skills}) == 1, intent
        outputs = {tuple(t.output for t in s.tests) for s in skills}
        assert len(outputs) == len(names), f"{intent}: two formats answer alike"


def test_intents_of_a_family_share_data_but_not_phrasing():
    """Different intents are told apart by their words (what routing from the query reads)."""
    for family, names in corpus.FAMILIES.items():
        skills = [corpus.get_skill(n) for n in names]
        data = [[s.data_of(p.input) for p in corpus.sample_pairs(s, 10, "heldout", 0)] for s in skills]
        assert all(d == data[0] for d in data), family
        phrasings = [set(s.intent_def.forms) for s in skills]
        for i, forms in enumerate(phrasings):
            assert not forms & set().union(*phrasings[:i], *phrasings[i + 1:]), family


@pytest.mark.parametrize("split", ["train", "demo", "heldout"])
def test_splits_are_disjoint_and_respected(split):
    for skill in corpus.ALL_SKILLS:
        pairs = corpus.sample_pairs(skill, 40, split, seed=1)
        data = [skill.data_of(p.input) for p in pairs]
        assert len(set(data)) == 40
        assert all(corpus.split_of(d) == split for d in data)


def test_training_stream_never_sees_heldout_or_demo_data():
    """Every piece of data the training episodes draw (2,000 episodes) lies in the train split, and
    none of the evaluation data (held-out tests, skill-file demonstrations) appears among them."""
    rng = random.Random(0)
    seen, drawn = set(), set()
    for _ in range(2000):
        skill, demos, query, _ = corpus.episode(rng, 8)
        drawn.add(skill.name)
        seen.update(skill.data_of(d.input) for d in demos)
        seen.add(skill.data_of(query))
    assert drawn == {s.name for s in corpus.ALL_SKILLS}  # the alternates are trained on too
    assert {corpus.split_of(t) for t in seen} == {"train"}
    for skill in corpus.ALL_SKILLS:
        evaluated = corpus.skill_object(skill.name, n_demos=8, n_tests=50)
        assert not seen & {skill.data_of(d.input) for d in evaluated.tests + evaluated.demonstrations}


def test_outputs_are_a_function_of_the_input():
    for skill in corpus.ALL_SKILLS:
        for pair in corpus.sample_pairs(skill, 30, "train", seed=2):
            assert skill.answer(pair.input) == pair.output
            assert pair.output and "\n" not in pair.output and len(pair.output) <= 64
            assert is_encodable(pair.input) and is_encodable(pair.output)


@pytest.mark.parametrize(("name", "text", "expected"), [
    ("upper-case", "uppercase: quiet river stone", "QUIET RIVER STONE"),
    ("title-case", "capitalize quiet river stone", "Quiet River Stone"),
    ("acronym", "acronym for quiet river stone", "QRS"),
    ("acronym-dotted", "initials of quiet river stone", "Q.R.S."),
    ("word-count", "how many words in quiet river stone", "3"),
    ("word-count-words", "count the words: quiet river stone", "3 words"),
    ("snake-case", "snake case: quiet river stone", "quiet_river_stone"),
    ("camel-case", "variable name for quiet river stone", "quietRiverStone"),
    ("date-us", "in US format: 2024-03-12", "03/12/2024"),
    ("date-us-short", "US date for 2024-03-02", "3/2/2024"),
    ("date-long", "write out 2024-03-02", "2 March 2024"),
    ("date-long-us", "in words: 2024-03-02", "March 2, 2024"),
    ("date-quarter", "which quarter is 2024-11-30", "Q4 2024"),
    ("date-quarter-iso", "quarter of 2024-11-30", "2024-Q4"),
    ("contact-json", "save contact: Ana Souza <ana.souza@acme.io>", '{"name": "Ana Souza", "email": "ana.souza@acme.io"}'),
    ("contact-call", "new contact Ana Souza, ana@acme.io", 'add_contact("Ana Souza", "ana@acme.io")'),
    ("contact-name", "who is Ben Kim (bkim@lab.edu)", "Ben Kim"),
    ("contact-name-last", "name from Ben Kim, bkim@lab.edu", "Kim, Ben"),
    ("email-domain", "email domain of Ben Kim <bkim@lab.edu>", "lab.edu"),
    ("email-domain-at", "which domain: Ben Kim (bkim@lab.edu)", "@lab.edu"),
    ("sentiment", "sentiment: the soup was really great", "positive"),
    ("sentiment-short", "how did they feel? the soup was awful", "neg"),
    ("review-topic", "topic: our waiter seemed so-so", "service"),
    ("review-topic-tag", "what is this review about? our waiter seemed so-so", "#service"),
    ("timer-call", "set a timer for 5 minutes", "timer(minutes=5)"),
    ("timer-call", "start a 1 hour timer", "timer(hours=1)"),
    ("timer-duration", "count down 90 seconds", 'start_timer(duration="90s")'),
    ("reminder-call", "remind me to call mom at 6pm", 'remind(task="call mom", time="18:00")'),
    ("reminder-call", "at 12:30am remind me to lock the door", 'remind(task="lock the door", time="00:30")'),
    ("reminder-alarm", "please remind me to pay rent at 9:15am", 'alarm(time="09:15", note="pay rent")'),
    ("metric-convert", "convert 12 km", "12000 m"),
    ("metric-convert-grouped", "next unit down: 12 km", "12,000 m"),
    ("add-numbers", "what is 48 + 57", "105"),
    ("add-numbers-equation", "sum of 48 + 57", "48 + 57 = 105"),
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
    from skillsoup.skills.loader import load_skills

    skill = corpus.skill_object("date-long", n_demos=4, n_tests=6)
    assert len(skill.demonstrations) == 4 and len(skill.tests) == 6
    as_demo = corpus.get_skill("date-long")
    assert {corpus.split_of(as_demo.data_of(d.input)) for d in skill.demonstrations} == {"demo"}
    assert {corpus.split_of(as_demo.data_of(d.input)) for d in skill.tests} == {"heldout"}
    with pytest.raises(ValueError):
        corpus.skill_object("date-long", split="heldout")
    paths = write_skill_files(tmp_path, n_demos=4, n_tests=3)
    loaded = {s.name: s for s in load_skills(paths)}
    assert set(loaded) == {s.name for s in corpus.SKILLS}
    assert loaded["date-long"] == corpus.skill_object("date-long", n_demos=4, n_tests=3)
    alternates = write_skill_files(tmp_path / "alt", n_demos=2, n_tests=1, alternates=True)
    assert {s.name for s in load_skills(alternates)} == {s.name for s in corpus.ALTERNATES}


def test_the_shipped_skill_files_are_the_corpus():
    """skills/demo and skills/demo-alternates are what write_skill_files makes (regenerate them with
    ``python -m skillsoup.demo.skill_files`` after changing the corpus)."""
    from skillsoup.skills.loader import load_skills

    root = Path(__file__).resolve().parents[2] / "skills"
    for folder, alternates in (("demo", False), ("demo-alternates", True)):
        shipped = {s.name: s for s in load_skills(sorted((root / folder).iterdir()))}
        expected = corpus.SKILLS if not alternates else corpus.ALTERNATES
        assert set(shipped) == {s.name for s in expected}
        for s in expected:
            made = corpus.skill_object(s.name, n_demos=8, n_tests=20)
            assert shipped[s.name].demonstrations == made.demonstrations, s.name
