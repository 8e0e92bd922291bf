"""The demo model's world: 16 agent-style skills, generated inputs, and a fixed train / held-out split.

Each skill is a Python definition (:class:`DemoSkill`): a name, a description, a template, an input
generator (a seeded :class:`random.Random` in, one input out) and a function input -> output. Skills
of one *family* take the same kind of input, so without demonstrations a query is ambiguous:

    phrase    "quiet river stone"        -> upper-case, acronym, word-count, snake-case
    date      "2024-03-12"               -> date-us, date-long, date-quarter
    contact   "Ana Souza <ana@acme.io>"  -> contact-json, contact-name, email-domain
    review    "the soup was really great" -> sentiment, review-topic
    timer, reminder, quantity, sum       -> timer-call, reminder-call, metric-convert, add-numbers

Splits are a property of the input text alone (a hash), shared by every skill of a family, so an
input held out for one skill is never seen in training under another: ``split_of(text)`` is
"heldout" (15%), "demo" (5%, the demonstrations written into skill files) or "train" (80%).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from skillsoup.skill import DEFAULT_TEMPLATE, Demonstration, Skill

SPLITS = ("train", "demo", "heldout")
TOOL_TEMPLATE = "Request: {input}\nCall: {output}\n"


@dataclass(frozen=True)
class DemoSkill:
    name: str
    description: str
    family: str  # skills of one family share their input generator
    make_input: Callable[[random.Random], str]
    answer: Callable[[str], str]
    template: str = DEFAULT_TEMPLATE

    def pair(self, text: str) -> Demonstration:
        return Demonstration(text, self.answer(text))


def split_of(text: str) -> str:
    """The split an input belongs to, from a hash of its text (stable across runs and machines)."""
    bucket = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") % 100
    return "heldout" if bucket < 15 else "demo" if bucket < 20 else "train"


# ---- phrase family --------------------------------------------------------------------------------
WORDS = (
    "apple", "river", "stone", "green", "quiet", "lamp", "cloud", "silver", "bright", "garden", "north",
    "paper", "rapid", "ocean", "maple", "tiger", "winter", "candle", "forest", "golden", "little", "market",
    "orange", "purple", "rocket", "summer", "window", "yellow", "bridge", "copper", "desert", "engine",
    "falcon", "harbor", "island", "jungle", "kettle", "lemon", "meadow", "nickel", "pepper", "planet",
    "rabbit", "saddle", "timber", "velvet", "walnut", "basket", "cotton", "dragon", "feather", "glass",
    "hollow", "iron", "jacket", "ladder", "marble", "needle", "pebble", "quick", "ribbon", "shadow", "thunder",
    "urban", "violet", "wooden", "zebra", "amber", "blue", "cedar", "dusty", "early", "fancy", "gentle",
    "happy", "icy", "jolly", "keen", "lucky", "misty", "noble", "olive", "proud", "royal", "sandy", "tiny",
    "vivid", "wild", "brave", "calm", "dark", "fresh", "grand", "heavy", "light", "merry", "old", "red",
    "soft", "warm", "cold", "fast", "slow", "tall", "short", "deep", "sweet", "bold", "clear",
)


def _phrase(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))


# ---- date family ------------------------------------------------------------------------------------
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)
_FIRST_DAY, _LAST_DAY = _dt.date(1990, 1, 1).toordinal(), _dt.date(2035, 12, 31).toordinal()


def _date(rng: random.Random) -> str:
    return _dt.date.fromordinal(rng.randint(_FIRST_DAY, _LAST_DAY)).isoformat()


def _parse_date(text: str) -> _dt.date:
    return _dt.date.fromisoformat(text)


def _date_us(text: str) -> str:
    d = _parse_date(text)
    return f"{d.month:02d}/{d.day:02d}/{d.year}"


def _date_long(text: str) -> str:
    d = _parse_date(text)
    return f"{d.day} {MONTHS[d.month - 1]} {d.year}"


def _date_quarter(text: str) -> str:
    d = _parse_date(text)
    return f"Q{(d.month - 1) // 3 + 1} {d.year}"


# ---- contact family ----------------------------------------------------------------------------------
FIRST_NAMES = (
    "Ana", "Ben", "Carla", "David", "Elena", "Felix", "Grace", "Hugo", "Ines", "Jonas", "Kara", "Liam", "Maya",
    "Nils", "Olga", "Paul", "Rosa", "Sam", "Tara", "Umar", "Vera", "Omar", "Yara", "Zoe", "Alice", "Bruno",
    "Chloe", "Diego", "Emma", "Farah", "Gina", "Ivan", "Julia", "Kenji", "Lena", "Marco", "Nora", "Oscar",
)
LAST_NAMES = (
    "Souza", "Smith", "Rossi", "Nilsen", "Garcia", "Kim", "Novak", "Meyer", "Silva", "Brown", "Ito", "Khan",
    "Lopez", "Weber", "Costa", "Dubois", "Berg", "Moreau", "Fischer", "Patel", "Young", "Adams", "Hall",
    "Jensen", "Lind", "Okafor", "Park", "Quinn", "Reyes", "Stone", "Tanaka", "Vogel", "Walsh", "Zhou",
)
DOMAINS = (
    "acme.io", "example.com", "mail.org", "post.net", "corp.co", "inbox.dev", "web.de", "fastmail.com",
    "ship.it", "data.ai", "home.org", "lab.edu", "shop.biz", "news.info", "cloud.app", "team.work",
)


def _contact(rng: random.Random) -> str:
    first, last, domain = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES), rng.choice(DOMAINS)
    local = rng.choice((f"{first}.{last}", f"{first[0]}{last}", first, f"{first}{rng.randint(1, 99)}")).lower()
    form = rng.choice(("{name} <{email}>", "contact {name} at {email}", "reach {name} via {email}"))
    return form.format(name=f"{first} {last}", email=f"{local}@{domain}")


def _contact_parts(text: str) -> tuple[str, str]:
    """(name, email) from one of the contact forms."""
    if text.endswith(">"):
        name, email = text[:-1].split(" <")
        return name, email
    words = text.split()
    return f"{words[1]} {words[2]}", words[4]


def _contact_json(text: str) -> str:
    name, email = _contact_parts(text)
    return json.dumps({"name": name, "email": email})


def _contact_name(text: str) -> str:
    return _contact_parts(text)[0]


def _email_domain(text: str) -> str:
    return _contact_parts(text)[1].split("@", 1)[1]


# ---- review family -----------------------------------------------------------------------------------
TOPIC_NOUNS = {
    "food": ("pasta", "soup", "pizza", "coffee", "bread", "salad", "steak", "cake", "curry", "tea"),
    "service": ("waiter", "staff", "host", "service", "delivery", "manager", "cashier", "barista"),
    "price": ("price", "bill", "cost", "deal", "value", "check"),
    "place": ("room", "music", "view", "decor", "patio", "lighting", "terrace"),
}
SENTIMENT_WORDS = {
    "positive": ("great", "lovely", "excellent", "amazing", "superb", "wonderful", "fantastic", "perfect"),
    "negative": ("awful", "terrible", "bad", "poor", "dreadful", "horrible", "disappointing", "lousy"),
    "neutral": ("okay", "fine", "average", "ordinary", "acceptable", "alright", "so-so", "standard"),
}
_TOPIC_OF = {noun: topic for topic, nouns in TOPIC_NOUNS.items() for noun in nouns}
_SENTIMENT_OF = {word: label for label, words in SENTIMENT_WORDS.items() for word in words}


def _review(rng: random.Random) -> str:
    noun = rng.choice(rng.choice(list(TOPIC_NOUNS.values())))
    adjective = rng.choice(rng.choice(list(SENTIMENT_WORDS.values())))
    adverb = rng.choice(("", "really ", "quite ", "very ", "pretty "))
    return f"{rng.choice(('the', 'our', 'my'))} {noun} {rng.choice(('was', 'is', 'seemed'))} {adverb}{adjective}"


def _sentiment(text: str) -> str:
    return _SENTIMENT_OF[text.split()[-1]]


def _review_topic(text: str) -> str:
    return _TOPIC_OF[text.split()[1]]


# ---- tool calls ------------------------------------------------------------------------------------
_TIMER_UNITS = ("second", "minute", "hour")


def _timer_request(rng: random.Random) -> str:
    n, unit = rng.randint(1, 90), rng.choice(_TIMER_UNITS)
    units = unit if n == 1 else unit + "s"
    form = rng.choice(("set a timer for {n} {units}", "start a {n} {unit} timer", "timer for {n} {units} please",
                       "count down {n} {units}"))
    return form.format(n=n, unit=unit, units=units)


def _timer_call(text: str) -> str:
    words = text.split()
    for i, word in enumerate(words):
        if word.isdigit():
            unit = words[i + 1].rstrip("s")
            return f"timer({unit}s={int(word)})"
    raise ValueError(f"no duration in {text!r}")


TASKS = (
    "call mom", "buy milk", "water the plants", "pay rent", "book a table", "walk the dog", "take my pills",
    "send the report", "call the dentist", "pick up the kids", "feed the cat", "check the oven",
    "email Sam", "renew my passport", "pack my bag", "charge the car", "stretch", "buy flowers",
    "review the slides", "join the standup", "move the car", "order pizza", "call the bank", "print tickets",
    "back up my laptop", "clean the kitchen", "submit the form", "text Ana", "lock the door", "read chapter two",
)


def _reminder_request(rng: random.Random) -> str:
    hour, minute = rng.randint(1, 12), rng.choice((0, 0, 15, 30, 45))
    clock = f"{hour}{'' if minute == 0 else f':{minute:02d}'}{rng.choice(('am', 'pm'))}"
    form = rng.choice(("remind me to {task} at {t}", "at {t} remind me to {task}", "please remind me to {task} at {t}"))
    return form.format(task=rng.choice(TASKS), t=clock)


def _reminder_call(text: str) -> str:
    if text.startswith("at "):
        clock, task = text[3:].split(" remind me to ", 1)
    else:
        task, clock = text.split("remind me to ", 1)[1].rsplit(" at ", 1)
    hour_text, minute = (clock[:-2].split(":") + ["00"])[:2]
    hour = int(hour_text) % 12 + (12 if clock.endswith("pm") else 0)
    return f'remind(task="{task}", time="{hour:02d}:{minute}")'


# ---- quantities and sums -----------------------------------------------------------------------------
METRIC = {"km": ("m", 1000), "kg": ("g", 1000), "m": ("cm", 100), "L": ("mL", 1000), "cm": ("mm", 10)}


def _quantity(rng: random.Random) -> str:
    return f"{rng.randint(1, 999)} {rng.choice(list(METRIC))}"


def _metric_convert(text: str) -> str:
    number, unit = text.split()
    target, factor = METRIC[unit]
    return f"{int(number) * factor} {target}"


def _sum_problem(rng: random.Random) -> str:
    return f"{rng.randint(1, 99)} + {rng.randint(1, 99)}"


def _add_numbers(text: str) -> str:
    a, b = text.split(" + ")
    return str(int(a) + int(b))


# ---- the skills, in order -----------------------------------------------------------------------------
SKILLS: tuple[DemoSkill, ...] = (
    DemoSkill("upper-case", "Rewrite a short phrase in capital letters.", "phrase", _phrase, str.upper),
    DemoSkill("acronym", "Make an acronym from the first letter of each word of a phrase.", "phrase", _phrase,
              lambda t: "".join(w[0] for w in t.split()).upper()),
    DemoSkill("word-count", "Count the words in a phrase.", "phrase", _phrase, lambda t: str(len(t.split()))),
    DemoSkill("snake-case", "Join the words of a phrase with underscores (snake_case).", "phrase", _phrase,
              lambda t: "_".join(t.split())),
    DemoSkill("date-us", "Rewrite an ISO date (YYYY-MM-DD) in US format MM/DD/YYYY.", "date", _date, _date_us),
    DemoSkill("date-long", "Write an ISO date out as day, month name and year, e.g. 12 March 2024.", "date", _date,
              _date_long),
    DemoSkill("date-quarter", "Give the calendar quarter and year of an ISO date, e.g. Q1 2024.", "date", _date,
              _date_quarter),
    DemoSkill("contact-json", "Extract the name and email address from a contact line as JSON.", "contact",
              _contact, _contact_json),
    DemoSkill("contact-name", "Extract the person's full name from a contact line.", "contact", _contact,
              _contact_name),
    DemoSkill("email-domain", "Extract the domain of the email address in a contact line.", "contact", _contact,
              _email_domain),
    DemoSkill("sentiment", "Label the sentiment of a short review: positive, negative or neutral.", "review",
              _review, _sentiment),
    DemoSkill("review-topic", "Say what a short restaurant review is about: food, service, price or place.",
              "review", _review, _review_topic),
    DemoSkill("timer-call", "Turn a request for a timer into a timer(...) tool call.", "timer", _timer_request,
              _timer_call, TOOL_TEMPLATE),
    DemoSkill("reminder-call", "Turn a reminder request into a remind(task, time) tool call with a 24-hour time.",
              "reminder", _reminder_request, _reminder_call, TOOL_TEMPLATE),
    DemoSkill("metric-convert", "Convert a metric quantity to the next smaller unit (km->m, kg->g, m->cm, L->mL, "
              "cm->mm).", "quantity", _quantity, _metric_convert),
    DemoSkill("add-numbers", "Add two whole numbers below 100.", "sum", _sum_problem, _add_numbers),
)
SKILLS_BY_NAME = {s.name: s for s in SKILLS}
FAMILIES: dict[str, tuple[str, ...]] = {}
for _s in SKILLS:
    FAMILIES[_s.family] = FAMILIES.get(_s.family, ()) + (_s.name,)


def get_skill(name: str) -> DemoSkill:
    try:
        return SKILLS_BY_NAME[name]
    except KeyError:
        raise KeyError(f"no demo skill {name!r}; the demo skills are {', '.join(SKILLS_BY_NAME)}") from None


# ---- sampling ----------------------------------------------------------------------------------------
def sample_inputs(skill: DemoSkill | str, n: int, split: str = "train", seed: int = 0,
                  rng: random.Random | None = None) -> list[str]:
    """``n`` distinct inputs of ``skill`` from ``split``, deterministic for (family, split, seed).

    Skills of one family get the same inputs for the same seed. Pass ``rng`` to draw from a running
    generator instead (the training stream)."""
    skill = get_skill(skill) if isinstance(skill, str) else skill
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    rng = rng or random.Random(f"{skill.family}:{split}:{seed}")
    seen: dict[str, None] = {}
    for _ in range(200 * n + 1000):
        if len(seen) == n:
            break
        text = skill.make_input(rng)
        if split_of(text) == split:
            seen.setdefault(text)
    if len(seen) < n:
        raise ValueError(f"could not draw {n} distinct {split} inputs for {skill.name}")
    return list(seen)


def sample_pairs(skill: DemoSkill | str, n: int, split: str = "train", seed: int = 0) -> list[Demonstration]:
    """``n`` (input, output) pairs of ``skill`` with distinct inputs from ``split``."""
    skill = get_skill(skill) if isinstance(skill, str) else skill
    return [skill.pair(text) for text in sample_inputs(skill, n, split, seed)]


def episode(rng: random.Random, k: int, split: str = "train") -> tuple[DemoSkill, list[Demonstration], str, str]:
    """One few-shot episode: a skill drawn uniformly, ``k`` demonstrations and a query, all with
    distinct inputs from ``split`` -> (skill, demos, query, answer)."""
    skill = rng.choice(SKILLS)
    pairs = [skill.pair(t) for t in sample_inputs(skill, k + 1, split, rng=rng)]
    return skill, pairs[:k], pairs[k].input, pairs[k].output


def render_episode(skill: DemoSkill, pairs: list[Demonstration]) -> tuple[str, list[tuple[int, int]]]:
    """Text of ``pairs`` rendered with the skill's template, and the (start, end) character span of
    each output including the text that ends it (what the model must write after the query)."""
    head, tail = skill.template.split("{output}", 1)
    text, spans = "", []
    for p in pairs:
        text += head.replace("{input}", p.input).rstrip(" \t")
        start = len(text)
        text += head[len(head.rstrip(" \t")):] + p.output + tail
        spans.append((start, len(text)))
    return text, spans


def skill_object(name: str, n_demos: int = 8, split: str = "demo", seed: int = 0, n_tests: int = 50) -> Skill:
    """The demo skill as a :class:`~skillsoup.skill.Skill`: ``n_demos`` demonstrations from ``split``
    (default the "demo" slice, never trained on) and ``n_tests`` held-out tests."""
    s = get_skill(name)
    if split == "heldout":
        raise ValueError("demonstrations must not come from the held-out split (the tests do)")
    return Skill(
        name=s.name, description=s.description, demonstrations=tuple(sample_pairs(s, n_demos, split, seed)),
        template=s.template, tags=("demo-model", s.family), tests=tuple(sample_pairs(s, n_tests, "heldout", seed)),
    )


from skillsoup.demo.skill_files import write_skill_files  # noqa: E402,F401  (re-exported)
