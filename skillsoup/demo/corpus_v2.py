"""Demo corpus v2: the world of demo model v2, beside v1 (``corpus.py``, which the shipped checkpoint
was trained on and which stays as it is).

The design of v1 stays: the same 16 requests (*intents*), each with the same two answer formats
(``catalog.VARIANTS``, same names and outputs), both trained on, so a query alone leaves the format a
guess that demonstrations -- or an injected skill state -- settle. What v2 adds:

- **phrasings**: 8 to 10 trained phrasings per intent (v1's three among them, so the bundled skill
  files stay in distribution), sometimes after "hey, " / "ok, " or capitalised, and 3
  *held-out* phrasings per intent that no training episode ever uses (``IntentV2.heldout_forms``):
  the eval asks in them to see whether the model reads the request or recalls a sentence;
- **copying**: words, names, email addresses, tasks and numbers from large pools and random strings
  (``data_v2``): the answer must be copied from the query, it cannot be recalled;
- **arithmetic**: sums of two numbers 1..99, drawn twice as often as other intents (contacts and
  reminders, the longest copies, 1.5 times as often);
- **no skill**: requests no skill covers, answered with one fixed line, ``NO_SKILL`` ("no skill for
  that"), both with no state (what the runtime reads when its router abstains) and after another
  skill's demonstrations (a router that picked wrongly).

Splits are v1's: a hash of the data text (``corpus.split_of``), shared by the intents of a family.
Everything is deterministic from a seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from skillsoup.demo import data
from skillsoup.demo import data_v2 as d2
from skillsoup.demo.catalog import TOOL_TEMPLATE, VARIANTS, Variant
from skillsoup.demo.corpus import SPLITS, VariantFacts, draw_distinct, render_pairs
from skillsoup.skills.skill import DEFAULT_TEMPLATE, Demonstration, Skill

NO_SKILL = "no skill for that"
NO_SKILL_SHARE = 0.1  # of training episodes: half a bare no-skill request, half one after a skill's demos
PREFIXES = ("", "", "", "", "", "", "hey, ", "ok, ")
PHRASINGS = ("train", "heldout")


def _x(x: str) -> dict:
    return {"x": x}


def _timer_fields(x: str) -> dict:
    n, units = x.split()
    return {"x": x, "n": n, "unit": units.rstrip("s")}


def _reminder_fields(x: str) -> dict:
    task, clock = x.rsplit(" at ", 1)
    return {"x": x, "task": task, "t": clock}


def _quantity_fields(x: str) -> dict:
    return {"x": x, "target": d2.UNIT_WORDS[data.METRIC[x.split()[1]][0]]}


def _sum_fields(x: str) -> dict:
    a, b = x.split(" + ")
    return {"x": x, "a": a, "b": b}


@dataclass(frozen=True)
class IntentV2:
    name: str
    family: str
    make_data: Callable[[random.Random], str]
    forms: tuple[str, ...]  # trained phrasings (str.format fields from ``fields(data)``)
    heldout_forms: tuple[str, ...]  # never in a training episode
    template: str = DEFAULT_TEMPLATE
    fields: Callable[[str], dict] = _x
    weight: float = 1.0  # how often training episodes draw it, relative to the others

    def fill(self, form: str, data: str) -> str:
        return form.format(**self.fields(data))


INTENTS: tuple[IntentV2, ...] = (
    IntentV2("caps", "phrase", d2.phrase, (
        "uppercase: {x}", "in capitals: {x}", "capitalize {x}", "upper case {x}", "make {x} uppercase", "all caps: {x}",
        "shout {x}", "write {x} in capital letters", "caps lock {x}"),
        ("turn {x} into upper case", "yell {x}", "in block letters: {x}")),
    IntentV2("acronym", "phrase", d2.phrase, (
        "acronym for {x}", "initials of {x}", "abbreviate {x}", "acronym of {x}", "make an acronym from {x}",
        "first letters of {x}", "shorten {x} to initials", "what are the initials of {x}"),
        ("give me the acronym of {x}", "{x} as an acronym", "letters that stand for {x}")),
    IntentV2("count", "phrase", d2.phrase, (
        "how many words in {x}", "count the words: {x}", "word count of {x}", "number of words in {x}",
        "count words in {x}", "how many words does {x} have", "tally the words of {x}", "words in: {x}"),
        ("how long is {x} in words", "count how many words: {x}", "what is the word count of {x}")),
    IntentV2("identifier", "phrase", d2.phrase, (
        "snake case: {x}", "as an identifier: {x}", "variable name for {x}", "identifier for {x}",
        "name a variable {x}", "make {x} a variable name", "code name for {x}", "turn {x} into an identifier"),
        ("function name for {x}", "{x} as a variable", "field name for {x}")),
    IntentV2("us-date", "date", d2.iso_date, (
        "US date for {x}", "in US format: {x}", "american style: {x}", "US format of {x}", "write {x} the american way",
        "convert {x} to US format", "month first: {x}", "us style date {x}"),
        ("how do americans write {x}", "{x} in american format", "date {x} for a US form")),
    IntentV2("long-date", "date", d2.iso_date, (
        "write out {x}", "spell out the date {x}", "in words: {x}", "long form of {x}", "write the date {x} in full",
        "say {x} with the month name", "full date for {x}", "{x} written out"),
        ("read {x} aloud", "date {x} with the month spelled", "long date: {x}")),
    IntentV2("quarter", "date", d2.iso_date, (
        "which quarter is {x}", "quarter of {x}", "fiscal quarter for {x}", "what quarter is {x} in",
        "quarter for {x}", "which quarter does {x} fall in", "{x} is in which quarter", "calendar quarter of {x}"),
        ("in what quarter is {x}", "quarter containing {x}", "tell me the quarter of {x}")),
    IntentV2("save-contact", "contact", d2.contact, (
        "save contact: {x}", "add to address book: {x}", "new contact {x}", "save {x}", "store this contact: {x}",
        "add contact {x}", "remember this person: {x}", "create a contact for {x}"),
        ("put {x} in my contacts", "please keep {x} on file", "contact card for {x}"), weight=1.5),
    IntentV2("who", "contact", d2.contact, (
        "who is {x}", "name from {x}", "whose address is {x}", "full name in {x}", "what is the name in {x}",
        "person in {x}", "name of {x}", "who owns {x}"),
        ("which person is {x}", "the name behind {x}", "tell me who {x} is")),
    IntentV2("domain", "contact", d2.contact, (
        "email domain of {x}", "which domain: {x}", "company domain for {x}", "domain of {x}", "mail server of {x}",
        "what domain does {x} use", "domain name in {x}", "where does {x} get email"),
        ("host part of {x}", "email provider for {x}", "domain behind {x}")),
    IntentV2("mood", "review", d2.review, (
        "sentiment: {x}", "how did they feel? {x}", "rate the mood: {x}", "sentiment of {x}",
        "is this positive or negative: {x}", "mood of the review: {x}", "tone: {x}", "classify the feeling: {x}"),
        ("was this review happy: {x}", "feeling behind {x}", "how positive is {x}")),
    IntentV2("topic", "review", d2.review, (
        "topic: {x}", "what is this review about? {x}", "category of {x}", "subject of {x}", "what aspect: {x}",
        "tag the review: {x}", "review topic: {x}", "which area does {x} cover"),
        ("what part of the visit is {x} about", "theme of {x}", "classify the subject: {x}")),
    IntentV2("timer", "timer", d2.timer_duration, (
        "set a timer for {x}", "start a {n} {unit} timer", "timer for {x} please", "count down {x}", "timer {x}",
        "wake me in {x}", "give me {x} on the clock", "start counting down from {x}"),
        ("I need a {n} {unit} timer", "countdown of {x}", "ring in {x}"), TOOL_TEMPLATE, _timer_fields),
    IntentV2("reminder", "reminder", d2.reminder, (
        "remind me to {task} at {t}", "at {t} remind me to {task}", "please remind me to {task} at {t}",
        "set a reminder to {task} at {t}", "reminder: {task} at {t}", "don't let me forget to {task} at {t}",
        "remind me at {t} to {task}", "at {t} I need to {task}"),
        ("ping me to {task} at {t}", "I have to {task} at {t}, remind me", "nudge me at {t} about: {task}"),
        TOOL_TEMPLATE, _reminder_fields, 1.5),
    IntentV2("convert", "quantity", d2.quantity, (
        "convert {x}", "in smaller units: {x}", "next unit down: {x}", "convert {x} to {target}",
        "how many {target} in {x}", "{x} in {target}", "express {x} in {target}", "change {x} to the smaller unit"),
        ("what is {x} in {target}", "{x} to {target}", "turn {x} into {target}"), fields=_quantity_fields),
    IntentV2("add", "sum", d2.sum_problem, (
        "what is {x}", "add {x}", "sum of {x}", "{x} =", "calculate {x}", "add {a} and {b}", "what's {x}",
        "total of {a} and {b}", "compute {x}", "{a} plus {b}"),
        ("how much is {x}", "what do {a} and {b} add up to", "{a} + {b} equals"), fields=_sum_fields, weight=2.0),
)

# the answers: v1's renders, except where v2's data reads differently (richer reviews; reminders as "<task> at <clock>")
_V1_RENDER = {v.name: v.render for v in VARIANTS}
_V2_RENDER: dict[str, Callable[[str], str]] = {
    "sentiment": d2.sentiment, "sentiment-short": lambda t: d2.sentiment(t)[:3],
    "review-topic": d2.topic, "review-topic-tag": lambda t: "#" + d2.topic(t),
    "reminder-call": lambda t: _V1_RENDER["reminder-call"](_as_v1_reminder(t)),
    "reminder-alarm": lambda t: _V1_RENDER["reminder-alarm"](_as_v1_reminder(t)),
}


def _as_v1_reminder(text: str) -> str:
    """"<task> at <clock>" as v1's renders read it (so both corpora write one format)."""
    task, clock = text.rsplit(" at ", 1)
    return f"remind me to {task} at {clock}"


@dataclass(frozen=True)
class Pair:
    """One (query, answer) with what it was made from (the tests check the bookkeeping)."""

    query: str
    answer: str
    data: str  # the data text ("" for a no-skill request: the query is its own data)
    form: str  # the phrasing used (a no-skill form for no-skill requests)

    input = property(lambda self: self.query)  # read like a Demonstration (corpus.render_pairs)
    output = property(lambda self: self.answer)

    def demonstration(self) -> Demonstration:
        return Demonstration(self.query, self.answer)


@dataclass(frozen=True)
class DemoSkillV2(VariantFacts):
    variant: Variant
    intent_def: IntentV2

    def answer(self, data: str) -> str:
        return _V2_RENDER.get(self.name, self.variant.render)(data)


_INTENTS = {i.name: i for i in INTENTS}
ALL_SKILLS: tuple[DemoSkillV2, ...] = tuple(DemoSkillV2(v, _INTENTS[v.intent]) for v in VARIANTS)
SKILLS: tuple[DemoSkillV2, ...] = tuple(s for s in ALL_SKILLS if s.bundled)
ALTERNATES: tuple[DemoSkillV2, ...] = tuple(s for s in ALL_SKILLS if not s.bundled)
SKILLS_BY_NAME = {s.name: s for s in ALL_SKILLS}
_SKILL_WEIGHTS = [s.intent_def.weight for s in ALL_SKILLS]


def get_skill(name: str) -> DemoSkillV2:
    try:
        return SKILLS_BY_NAME[name]
    except KeyError:
        raise KeyError(f"no demo skill {name!r}; the demo skills are {', '.join(SKILLS_BY_NAME)}") from None


def phrase(intent: IntentV2, data: str, rng: random.Random, phrasing: str = "train") -> tuple[str, str]:
    """-> (query, form): ``data`` asked in one of the intent's trained or held-out phrasings, maybe
    after a polite prefix, maybe capitalised (never when the query starts with the data)."""
    form = rng.choice(intent.forms if phrasing == "train" else intent.heldout_forms)
    query = intent.fill(form, data)
    if not form.startswith("{"):
        query = rng.choice(PREFIXES) + query
        if rng.random() < 0.2:
            query = query[0].upper() + query[1:]
    return query, form


def _check(split: str, phrasing: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if phrasing not in PHRASINGS:
        raise ValueError(f"phrasing must be one of {PHRASINGS}, got {phrasing!r}")


def sample_pairs(skill: DemoSkillV2 | str, n: int, split: str = "train", seed: int = 0, phrasing: str = "train",
                 rng: random.Random | None = None) -> list[Pair]:
    """``n`` pairs of ``skill`` with distinct data from ``split``, asked in ``phrasing``; deterministic
    for (family, split, seed) -- the data -- and (intent, split, seed, phrasing) -- the queries -- so
    the two formats of an intent get the same queries. ``rng``: draw from a running generator instead."""
    skill = get_skill(skill) if isinstance(skill, str) else skill
    _check(split, phrasing)
    data_rng = rng or random.Random(f"v2:{skill.family}:{split}:{seed}")
    form_rng = rng or random.Random(f"v2:{skill.intent}:{split}:{seed}:{phrasing}")

    def make(text: str) -> Pair:
        query, form = phrase(skill.intent_def, text, form_rng, phrasing)
        return Pair(query, skill.answer(text), text, form)

    return draw_distinct(lambda: skill.intent_def.make_data(data_rng), make, n, split, f"inputs for {skill.name}")


def no_skill_pairs(n: int, split: str = "train", seed: int = 0, phrasing: str = "train",
                   rng: random.Random | None = None) -> list[Pair]:
    """``n`` distinct requests no skill covers, each answered with ``NO_SKILL``. Trained phrasings:
    requests from ``split`` (a hash of the request). Held-out phrasings (never trained on, whatever
    their words): the forms in turn, so each is asked about equally often; ``split`` is not used."""
    _check(split, phrasing)
    rng = rng or random.Random(f"v2:no-skill:{split}:{seed}:{phrasing}")
    forms = d2.NO_SKILL_FORMS if phrasing == "train" else d2.NO_SKILL_HELDOUT_FORMS
    drawn = {"i": 0}  # the form of the request just drawn (make runs right after its draw)

    def draw() -> str:
        drawn["i"] += 1
        drawn["form"] = rng.choice(forms) if phrasing == "train" else forms[drawn["i"] % len(forms)]
        return d2.no_skill_request(rng, (drawn["form"],))

    return draw_distinct(draw, lambda query: Pair(query, NO_SKILL, "", drawn["form"]), n,
                         split if phrasing == "train" else None, f"no-skill requests ({phrasing} phrasings)",
                         tries=500 * n + 2000)


@dataclass(frozen=True)
class Episode:
    """Pairs rendered with one template: all one skill's, or ending in (or made of) no-skill requests."""

    skill: str  # the skill whose demonstrations lead ("" for an episode of no-skill requests alone)
    template: str
    pairs: tuple[Pair, ...]


def training_episode(rng: random.Random, n_pairs: int, split: str = "train") -> Episode:
    """One training episode of ``n_pairs`` pairs, data from ``split`` and trained phrasings only.
    The skill is drawn from all 32 formats (bundled or not), weighted by intent; with probability
    ``NO_SKILL_SHARE`` the episode teaches the no-skill line instead (see the module docstring)."""
    roll = rng.random()
    if roll < NO_SKILL_SHARE / 2:
        return Episode("", DEFAULT_TEMPLATE, tuple(no_skill_pairs(rng.randint(1, 3), split, rng=rng)))
    skill = rng.choices(ALL_SKILLS, weights=_SKILL_WEIGHTS)[0]
    if roll < NO_SKILL_SHARE:
        demos = sample_pairs(skill, n_pairs - 1, split, rng=rng) if n_pairs > 1 else []
        return Episode(skill.name, skill.template, tuple(demos + no_skill_pairs(1, split, rng=rng)))
    return Episode(skill.name, skill.template, tuple(sample_pairs(skill, n_pairs, split, rng=rng)))


def training_text(rng: random.Random, n_pairs: int, split: str = "train") -> tuple[str, list[tuple[int, int]]]:
    """What the trainer reads: one episode's text and the spans its loss is on."""
    episode = training_episode(rng, n_pairs, split)
    return render_pairs(episode.template, episode.pairs)


def training_pool(seed: str, n: int, min_pairs: int, max_pairs: int, split: str = "train") -> list:
    """``n`` training texts (``training_text``) from their own generator seeded with ``seed``, each
    of ``min_pairs``..``max_pairs`` pairs: a unit of work a trainer can hand to another process."""
    rng = random.Random(seed)
    return [training_text(rng, rng.randint(min_pairs, max_pairs), split) for _ in range(n)]


def skill_object(name: str, n_demos: int = 8, split: str = "demo", seed: int = 0, n_tests: int = 50,
                 phrasing: str = "train") -> Skill:
    """The v2 demo skill as a :class:`Skill`: ``n_demos`` demonstrations from ``split`` in trained
    phrasings, and ``n_tests`` held-out tests asked in ``phrasing`` ("heldout": never trained on)."""
    s = get_skill(name)
    if split == "heldout":
        raise ValueError("demonstrations must not come from the held-out split (the tests do)")
    tags = ("demo-model-v2", s.family) + (() if s.bundled else ("alternate", s.intent))
    return Skill(name=s.name, description=s.description, template=s.template, tags=tags,
                 demonstrations=tuple(p.demonstration() for p in sample_pairs(s, n_demos, split, seed)),
                 tests=tuple(p.demonstration() for p in sample_pairs(s, n_tests, "heldout", seed, phrasing)))
