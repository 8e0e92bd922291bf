"""The data of demo corpus v2 (``skillsoup/demo/corpus_v2.py``): seeded generators (a
``random.Random`` in, one text out) and the parsers the answers are computed with.

What v2 changes against v1 (``data.py``): names, email addresses, words, tasks and numbers come from
large pools and from random pronounceable strings, so a model can only answer by copying them from
the query, never by recalling a short list; reviews have more words and shapes ("the service was
slow and rude"); requests that no skill covers have their own generator. Every data text is plain
printable ASCII (the character tokenizer's alphabet), and the answer of every format is a function
of the data text alone, as in v1.
"""

from __future__ import annotations

import datetime as _dt
import random

from skillsoup.demo import data

# ---- random pronounceable strings (the copy test: no list to recall them from) ----------------------
_ONSETS = ("b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z", "br", "ch",
           "cl", "dr", "fl", "gr", "kr", "pl", "pr", "sh", "st", "th", "tr", "", "")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ou", "y")
_CODAS = ("", "", "", "n", "r", "l", "s", "t", "m", "k", "x", "nd", "rt")


def pseudo_word(rng: random.Random, min_syllables: int = 1, max_syllables: int = 3) -> str:
    """A random lowercase word like "brenato": made to be copied, never seen twice."""
    n = rng.randint(min_syllables, max_syllables)
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(n)) or "a"


# ---- phrase family ------------------------------------------------------------------------------------
EXTRA_WORDS = (
    "hello", "world", "portable", "network", "graphics", "machine", "learning", "open", "source", "code",
    "data", "base", "user", "account", "search", "engine", "model", "state", "soup", "skill", "router",
    "token", "vector", "memory", "server", "client", "binary", "random", "access", "system", "file", "table",
    "graph", "neural", "deep", "signal", "power", "plant", "coffee", "morning", "evening", "night", "office",
    "school", "music", "video", "camera", "phone", "letter", "number", "street", "city", "country", "river",
    "mountain", "valley", "ocean", "storm", "light", "house", "door", "garden", "kitchen", "chair", "table",
    "pencil", "orbit", "galaxy", "comet", "pixel", "cursor", "button", "screen", "cable", "socket", "driver",
)
_WORD_POOL = tuple(dict.fromkeys(data.WORDS + EXTRA_WORDS))


def word(rng: random.Random) -> str:
    return rng.choice(_WORD_POOL) if rng.random() < 0.5 else pseudo_word(rng)


def phrase(rng: random.Random) -> str:
    return " ".join(word(rng) for _ in range(rng.randint(2, 5)))


# ---- date family ---------------------------------------------------------------------------------------
_FIRST_DAY, _LAST_DAY = _dt.date(1900, 1, 1).toordinal(), _dt.date(2099, 12, 31).toordinal()


def iso_date(rng: random.Random) -> str:
    return _dt.date.fromordinal(rng.randint(_FIRST_DAY, _LAST_DAY)).isoformat()


# ---- contact family ------------------------------------------------------------------------------------
_TLDS = ("com", "io", "org", "net", "dev", "app", "co", "ai", "de", "edu", "info", "biz")


def name_part(rng: random.Random, pool: tuple[str, ...]) -> str:
    return rng.choice(pool) if rng.random() < 0.3 else pseudo_word(rng, 1, 3).capitalize()


def domain(rng: random.Random) -> str:
    host = rng.choice(_WORD_POOL) if rng.random() < 0.3 else pseudo_word(rng, 1, 3)
    return f"{host}.{rng.choice(_TLDS)}"


def contact(rng: random.Random) -> str:
    """"First Last <email>", "First Last, email" or "First Last (email)"; parsed by data.contact_parts."""
    first, last = name_part(rng, data.FIRST_NAMES), name_part(rng, data.LAST_NAMES)
    local = rng.choice((f"{first}.{last}", f"{first[0]}{last}", first, f"{first}{rng.randint(1, 999)}",
                        f"{first}_{last}", pseudo_word(rng, 1, 2))).lower()
    form = rng.choice(("{name} <{email}>", "{name}, {email}", "{name} ({email})"))
    return form.format(name=f"{first} {last}", email=f"{local}@{domain(rng)}")


# ---- review family --------------------------------------------------------------------------------------
TOPIC_NOUNS = {
    "food": data.TOPIC_NOUNS["food"] + ("burger", "noodles", "dessert", "wine", "fries", "sushi",
                                        "tacos", "omelette", "risotto"),
    "service": data.TOPIC_NOUNS["service"] + ("waitress", "chef", "bartender", "reception"),
    "price": data.TOPIC_NOUNS["price"] + ("prices", "tip", "charge", "fee"),
    "place": data.TOPIC_NOUNS["place"] + ("table", "seating", "garden", "interior", "parking", "noise"),
}
SENTIMENT_WORDS = {
    "positive": data.SENTIMENT_WORDS["positive"] + ("friendly", "delicious", "fair", "cozy", "quick", "kind",
                                                    "fresh", "charming"),
    "negative": data.SENTIMENT_WORDS["negative"] + ("slow", "rude", "cold", "greasy", "overpriced", "noisy",
                                                    "stale", "dirty"),
    "neutral": data.SENTIMENT_WORDS["neutral"] + ("decent", "typical", "normal", "passable", "middling"),
}
_TOPIC_OF = {noun: topic for topic, nouns in TOPIC_NOUNS.items() for noun in nouns}
_SENTIMENT_OF = {w: label for label, words in SENTIMENT_WORDS.items() for w in words}
_REVIEW_SHAPES = (
    "{det} {noun} {verb} {adv}{adj}", "{det} {noun} {verb} {adj} and {adj2}", "{det} {noun} {verb} {adv}{adj}",
    "i found the {noun} {adj}", "{det} {noun}: {adj}", "{adj} {noun}", "honestly the {noun} {verb} {adj}",
)


def review(rng: random.Random) -> str:
    topic, label = rng.choice(list(TOPIC_NOUNS)), rng.choice(list(SENTIMENT_WORDS))
    adjectives = rng.sample(SENTIMENT_WORDS[label], 2)
    return rng.choice(_REVIEW_SHAPES).format(
        det=rng.choice(("the", "our", "my")), noun=rng.choice(TOPIC_NOUNS[topic]),
        verb=rng.choice(("was", "is", "seemed", "were")), adv=rng.choice(("", "really ", "quite ", "very ", "so ")),
        adj=adjectives[0], adj2=adjectives[1])


def sentiment(text: str) -> str:
    """The label of the review's sentiment words (one review's words share one label)."""
    return next(_SENTIMENT_OF[w] for w in reversed(text.replace(":", " ").split()) if w in _SENTIMENT_OF)


def topic(text: str) -> str:
    words = text.replace(":", " ").split()
    return next(_TOPIC_OF[w] for w in words if w in _TOPIC_OF)


# ---- tool calls -----------------------------------------------------------------------------------------
def timer_duration(rng: random.Random) -> str:
    """"5 minutes", "1 hour": what data.py's timer renders read (a number, then its unit)."""
    n, unit = rng.randint(1, 120), rng.choice(("second", "minute", "hour"))
    return f"{n} {unit}{'' if n == 1 else 's'}"


_ERRANDS = (("call", "name"), ("email", "name"), ("text", "name"), ("meet", "name"), ("thank", "name"),
            ("buy", "thing"), ("pick up the", "thing"), ("return the", "thing"), ("order", "thing"),
            ("fix the", "thing"), ("pack the", "thing"), ("book the", "thing"))


def task(rng: random.Random) -> str:
    if rng.random() < 0.3:
        return rng.choice(data.TASKS)
    verb, kind = rng.choice(_ERRANDS)
    obj = name_part(rng, data.FIRST_NAMES) if kind == "name" else word(rng)
    return f"{verb} {obj}"


def reminder(rng: random.Random) -> str:
    """"<task> at <h[:mm]am|pm>"; its task never contains " at "."""
    hour, minute = rng.randint(1, 12), rng.choice((0, 0, 0) + tuple(range(5, 60, 5)))
    clock = f"{hour}{'' if minute == 0 else f':{minute:02d}'}{rng.choice(('am', 'pm'))}"
    return f"{task(rng)} at {clock}"


# ---- quantities and sums ---------------------------------------------------------------------------------
UNIT_WORDS = {"m": "meters", "g": "grams", "cm": "centimeters", "mL": "milliliters", "mm": "millimeters"}


def quantity(rng: random.Random) -> str:
    return f"{rng.randint(1, 9999)} {rng.choice(list(data.METRIC))}"


sum_problem = data.sum_problem  # two whole numbers 1..99: the sum's digits are a lookup of four digits


# ---- requests no skill covers ------------------------------------------------------------------------------
_CITIES = ("Paris", "Lagos", "Lima", "Osaka", "Berlin", "Cairo", "Denver", "Oslo", "Quito", "Perth", "Seoul", "Porto")
_COUNTRIES = ("France", "Peru", "Japan", "Kenya", "Chile", "Norway", "Egypt", "Canada", "India", "Spain", "Ghana")
_TOPICS = ("black holes", "taxes", "photosynthesis", "the moon", "jazz", "volcanoes", "bitcoin", "gravity", "dreams")
NO_SKILL_FORMS = (  # (form, fillers): requests about things no demo skill does
    "what is the capital of {country}", "tell me a joke about {word}", "write a poem about {word}",
    "translate {word} into {language}", "what's the weather in {city}", "who won the {year} world cup",
    "explain {topic} to me", "book a flight to {city}", "what time is it in {city}", "play some {genre} music",
    "how do I learn {language}", "recommend a movie about {topic}", "what is the meaning of {word}",
    "who is the president of {country}", "set the thermostat to {n} degrees", "turn off the lights",
    "summarize this article about {topic}", "draw a picture of a {word}", "how far is {city} from {city2}",
    "why is the sky blue", "convert this pdf to word", "order a taxi to {city}", "sing me a song",
    "what should I cook tonight", "is it going to rain in {city}", "find a hotel in {city}",
)
NO_SKILL_HELDOUT_FORMS = (  # never trained on: the no-skill line must come from the request's meaning
    "how many people live in {country}", "give me a fun fact about {topic}", "who painted the {word} portrait",
    "what is the best way to visit {city}", "tell me the history of {topic}",
)


def no_skill_request(rng: random.Random, forms: tuple[str, ...] = NO_SKILL_FORMS) -> str:
    return rng.choice(forms).format(
        country=rng.choice(_COUNTRIES), word=word(rng), language=rng.choice(("French", "German", "Spanish", "Hindi")),
        city=rng.choice(_CITIES), city2=rng.choice(_CITIES), year=rng.randint(1950, 2030), topic=rng.choice(_TOPICS),
        genre=rng.choice(("jazz", "rock", "folk", "techno")), n=rng.randint(15, 30))
