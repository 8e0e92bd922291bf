"""The data the demo skills' queries carry: seeded generators (a ``random.Random`` in, one text out)
and the parsers the answers are computed with."""

from __future__ import annotations

import datetime as _dt
import random

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


def phrase(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))


# ---- date family ------------------------------------------------------------------------------------
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
    "November", "December",
)
_FIRST_DAY, _LAST_DAY = _dt.date(1990, 1, 1).toordinal(), _dt.date(2035, 12, 31).toordinal()


def iso_date(rng: random.Random) -> str:
    return _dt.date.fromordinal(rng.randint(_FIRST_DAY, _LAST_DAY)).isoformat()


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


def contact(rng: random.Random) -> str:
    first, last, domain = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES), rng.choice(DOMAINS)
    local = rng.choice((f"{first}.{last}", f"{first[0]}{last}", first, f"{first}{rng.randint(1, 99)}")).lower()
    form = rng.choice(("{name} <{email}>", "{name}, {email}", "{name} ({email})"))
    return form.format(name=f"{first} {last}", email=f"{local}@{domain}")


def contact_parts(text: str) -> tuple[str, str]:
    """(name, email) from a contact line: two name words, then the address in <>, () or after a comma."""
    first, last, address = text.split(" ", 2)
    return f"{first} {last.rstrip(',')}", address.strip("<>()")


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


def review(rng: random.Random) -> str:
    noun = rng.choice(rng.choice(list(TOPIC_NOUNS.values())))
    adjective = rng.choice(rng.choice(list(SENTIMENT_WORDS.values())))
    adverb = rng.choice(("", "really ", "quite ", "very ", "pretty "))
    return f"{rng.choice(('the', 'our', 'my'))} {noun} {rng.choice(('was', 'is', 'seemed'))} {adverb}{adjective}"


def sentiment(text: str) -> str:
    return _SENTIMENT_OF[text.split()[-1]]


def topic(text: str) -> str:
    return _TOPIC_OF[text.split()[1]]


# ---- tool calls ------------------------------------------------------------------------------------
_TIMER_UNITS = ("second", "minute", "hour")


def timer_request(rng: random.Random) -> str:
    n, unit = rng.randint(1, 90), rng.choice(_TIMER_UNITS)
    units = unit if n == 1 else unit + "s"
    form = rng.choice(("set a timer for {n} {units}", "start a {n} {unit} timer", "timer for {n} {units} please",
                       "count down {n} {units}"))
    return form.format(n=n, unit=unit, units=units)


TASKS = (
    "call mom", "buy milk", "water the plants", "pay rent", "book a table", "walk the dog", "take my pills",
    "send the report", "call the dentist", "pick up the kids", "feed the cat", "check the oven",
    "email Sam", "renew my passport", "pack my bag", "charge the car", "stretch", "buy flowers",
    "review the slides", "join the standup", "move the car", "order pizza", "call the bank", "print tickets",
    "back up my laptop", "clean the kitchen", "submit the form", "text Ana", "lock the door", "read chapter two",
)


def reminder_request(rng: random.Random) -> str:
    hour, minute = rng.randint(1, 12), rng.choice((0, 0, 15, 30, 45))
    clock = f"{hour}{'' if minute == 0 else f':{minute:02d}'}{rng.choice(('am', 'pm'))}"
    form = rng.choice(("remind me to {task} at {t}", "at {t} remind me to {task}", "please remind me to {task} at {t}"))
    return form.format(task=rng.choice(TASKS), t=clock)


def reminder_parts(text: str) -> tuple[str, str]:
    """(task, 24-hour "HH:MM") from a reminder request."""
    if text.startswith("at "):
        clock, task = text[3:].split(" remind me to ", 1)
    else:
        task, clock = text.split("remind me to ", 1)[1].rsplit(" at ", 1)
    hour_text, minute = (clock[:-2].split(":") + ["00"])[:2]
    hour = int(hour_text) % 12 + (12 if clock.endswith("pm") else 0)
    return task, f"{hour:02d}:{minute}"


# ---- quantities and sums -----------------------------------------------------------------------------
METRIC = {"km": ("m", 1000), "kg": ("g", 1000), "m": ("cm", 100), "L": ("mL", 1000), "cm": ("mm", 10)}


def quantity(rng: random.Random) -> str:
    return f"{rng.randint(1, 999)} {rng.choice(list(METRIC))}"


def sum_problem(rng: random.Random) -> str:
    return f"{rng.randint(1, 99)} + {rng.randint(1, 99)}"


def add(text: str) -> str:
    a, b = text.split(" + ")
    return str(int(a) + int(b))
