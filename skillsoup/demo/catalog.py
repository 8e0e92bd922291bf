"""The demo skills themselves: what each query asks for (an *intent*) and the answer formats it can take.

The query says what to do ("which quarter is 2024-03-12"); the demonstrations say how to write the
answer ("Q1 2024" or "2024-Q1"). Every intent has two format *variants*, all in the
training corpus, so without demonstrations the format is a guess. One variant per intent is
bundled as a skill file (16 skills); the others ship as alternates a user can add to change the
convention. Skills of one intent share their query phrasings, so a query alone never tells the
variants apart, while different intents are told apart by their words (what a router needs).
"""

from __future__ import annotations

import datetime as _dt
import json
import random
from collections.abc import Callable
from dataclasses import dataclass

from skillsoup.demo import data
from skillsoup.skills.skill import DEFAULT_TEMPLATE

TOOL_TEMPLATE = "Request: {input}\nCall: {output}\n"


@dataclass(frozen=True)
class Intent:
    name: str
    family: str  # the kind of data the query carries; intents of one family share their data
    make_data: Callable[[random.Random], str]
    forms: tuple[str, ...]  # query phrasings, "{x}" is the data
    template: str = DEFAULT_TEMPLATE

    def query(self, rng: random.Random, text: str) -> str:
        return rng.choice(self.forms).replace("{x}", text)

    def data_of(self, query: str) -> str:
        """The data inside ``query`` (the inverse of :meth:`query`); ValueError if no phrasing fits."""
        for form in sorted(self.forms, key=len, reverse=True):  # the most specific phrasing first
            head, tail = form.split("{x}")
            if query.startswith(head) and query.endswith(tail) and len(query) > len(head) + len(tail):
                return query[len(head): len(query) - len(tail)]
        raise ValueError(f"{query!r} is not phrased as a {self.name!r} query")


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    intent: str
    render: Callable[[str], str]  # data -> answer
    bundled: bool


def _date(text: str) -> _dt.date:
    return _dt.date.fromisoformat(text)


def _month(d: _dt.date) -> str:
    return data.MONTHS[d.month - 1]


def _quarter(d: _dt.date) -> int:
    return (d.month - 1) // 3 + 1


def _timer_units(text: str) -> tuple[int, str]:
    words = text.split()
    for i, word in enumerate(words):
        if word.isdigit():
            return int(word), words[i + 1].rstrip("s")
    raise ValueError(f"no duration in {text!r}")


def _timer_call(text: str) -> str:
    n, unit = _timer_units(text)
    return f"timer({unit}s={n})"


def _timer_duration(text: str) -> str:
    n, unit = _timer_units(text)
    return f'start_timer(duration="{n}{unit[0]}")'


def _remind(text: str) -> str:
    task, clock = data.reminder_parts(text)
    return f'remind(task="{task}", time="{clock}")'


def _alarm(text: str) -> str:
    task, clock = data.reminder_parts(text)
    return f'alarm(time="{clock}", note="{task}")'


def _metric(text: str, grouped: bool) -> str:
    number, unit = text.split()
    target, factor = data.METRIC[unit]
    value = int(number) * factor
    return f"{value:,} {target}" if grouped else f"{value} {target}"


INTENTS: tuple[Intent, ...] = (
    Intent("caps", "phrase", data.phrase, ("uppercase: {x}", "in capitals: {x}", "capitalize {x}")),
    Intent("acronym", "phrase", data.phrase, ("acronym for {x}", "initials of {x}", "abbreviate {x}")),
    Intent("count", "phrase", data.phrase, ("how many words in {x}", "count the words: {x}", "word count of {x}")),
    Intent("identifier", "phrase", data.phrase, ("snake case: {x}", "as an identifier: {x}", "variable name for {x}")),
    Intent("us-date", "date", data.iso_date, ("US date for {x}", "in US format: {x}", "american style: {x}")),
    Intent("long-date", "date", data.iso_date, ("write out {x}", "spell out the date {x}", "in words: {x}")),
    Intent("quarter", "date", data.iso_date, ("which quarter is {x}", "quarter of {x}", "fiscal quarter for {x}")),
    Intent("save-contact", "contact", data.contact, ("save contact: {x}", "add to address book: {x}", "new contact {x}")),
    Intent("who", "contact", data.contact, ("who is {x}", "name from {x}", "whose address is {x}")),
    Intent("domain", "contact", data.contact, ("email domain of {x}", "which domain: {x}", "company domain for {x}")),
    Intent("mood", "review", data.review, ("sentiment: {x}", "how did they feel? {x}", "rate the mood: {x}")),
    Intent("topic", "review", data.review, ("topic: {x}", "what is this review about? {x}", "category of {x}")),
    Intent("timer", "timer", data.timer_request, ("{x}",), TOOL_TEMPLATE),
    Intent("reminder", "reminder", data.reminder_request, ("{x}",), TOOL_TEMPLATE),
    Intent("convert", "quantity", data.quantity, ("convert {x}", "in smaller units: {x}", "next unit down: {x}")),
    Intent("add", "sum", data.sum_problem, ("what is {x}", "add {x}", "sum of {x}")),
)

VARIANTS: tuple[Variant, ...] = (
    Variant("upper-case", "Rewrite a short phrase in capital letters.", "caps", str.upper, True),
    Variant("title-case", "Rewrite a short phrase in Title Case.", "caps", str.title, False),
    Variant("acronym", "Make an acronym from the first letter of each word of a phrase.", "acronym",
            lambda t: "".join(w[0] for w in t.split()).upper(), True),
    Variant("acronym-dotted", "Make a dotted acronym (Q.R.S.) from the words of a phrase.", "acronym",
            lambda t: "".join(w[0] + "." for w in t.split()).upper(), False),
    Variant("word-count", "Count the words in a phrase (just the number).", "count", lambda t: str(len(t.split())), True),
    Variant("word-count-words", "Count the words in a phrase, as '3 words'.", "count",
            lambda t: f"{len(t.split())} words", False),
    Variant("snake-case", "Turn a phrase into a snake_case identifier.", "identifier", lambda t: "_".join(t.split()), True),
    Variant("camel-case", "Turn a phrase into a camelCase identifier.", "identifier",
            lambda t: t.split()[0] + "".join(w.title() for w in t.split()[1:]), False),
    Variant("date-us", "Rewrite an ISO date (YYYY-MM-DD) in US format MM/DD/YYYY.", "us-date",
            lambda t: f"{_date(t):%m/%d/%Y}", True),
    Variant("date-us-short", "Rewrite an ISO date in US format without leading zeros (M/D/YYYY).", "us-date",
            lambda t: f"{_date(t).month}/{_date(t).day}/{_date(t).year}", False),
    Variant("date-long", "Write an ISO date out as day, month name and year, e.g. 12 March 2024.", "long-date",
            lambda t: f"{_date(t).day} {_month(_date(t))} {_date(t).year}", True),
    Variant("date-long-us", "Write an ISO date out US-style, e.g. March 12, 2024.", "long-date",
            lambda t: f"{_month(_date(t))} {_date(t).day}, {_date(t).year}", False),
    Variant("date-quarter", "Give the calendar quarter and year of an ISO date, e.g. Q1 2024.", "quarter",
            lambda t: f"Q{_quarter(_date(t))} {_date(t).year}", True),
    Variant("date-quarter-iso", "Give the quarter of an ISO date as YYYY-Qn, e.g. 2024-Q1.", "quarter",
            lambda t: f"{_date(t).year}-Q{_quarter(_date(t))}", False),
    Variant("contact-json", "Turn a contact line into JSON with the name and email address.", "save-contact",
            lambda t: json.dumps(dict(zip(("name", "email"), data.contact_parts(t)))), True),
    Variant("contact-call", "Turn a contact line into an add_contact(name, email) tool call.", "save-contact",
            lambda t: 'add_contact("{}", "{}")'.format(*data.contact_parts(t)), False),
    Variant("contact-name", "Give the person's full name from a contact line.", "who",
            lambda t: data.contact_parts(t)[0], True),
    Variant("contact-name-last", "Give the person's name from a contact line as 'Last, First'.", "who",
            lambda t: ", ".join(reversed(data.contact_parts(t)[0].split())), False),
    Variant("email-domain", "Give the domain of the email address in a contact line.", "domain",
            lambda t: data.contact_parts(t)[1].split("@", 1)[1], True),
    Variant("email-domain-at", "Give the domain of a contact line's email address with its @ (@acme.io).", "domain",
            lambda t: "@" + data.contact_parts(t)[1].split("@", 1)[1], False),
    Variant("sentiment", "Label the sentiment of a short review: positive, negative or neutral.", "mood",
            data.sentiment, True),
    Variant("sentiment-short", "Label a review's sentiment as pos, neg or neu.", "mood", lambda t: data.sentiment(t)[:3],
            False),
    Variant("review-topic", "Say what a short restaurant review is about: food, service, price or place.", "topic",
            data.topic, True),
    Variant("review-topic-tag", "Tag what a restaurant review is about as #food, #service, #price or #place.", "topic",
            lambda t: "#" + data.topic(t), False),
    Variant("timer-call", "Turn a request for a timer into a timer(...) tool call.", "timer", _timer_call, True),
    Variant("timer-duration", 'Turn a timer request into start_timer(duration="5m").', "timer", _timer_duration, False),
    Variant("reminder-call", "Turn a reminder request into a remind(task, time) tool call with a 24-hour time.",
            "reminder", _remind, True),
    Variant("reminder-alarm", "Turn a reminder request into an alarm(time, note) tool call with a 24-hour time.",
            "reminder", _alarm, False),
    Variant("metric-convert", "Convert a metric quantity to the next smaller unit (km->m, kg->g, m->cm, L->mL, "
            "cm->mm).", "convert", lambda t: _metric(t, False), True),
    Variant("metric-convert-grouped", "Convert a metric quantity to the next smaller unit, thousands grouped (12,000 m).",
            "convert", lambda t: _metric(t, True), False),
    Variant("add-numbers", "Add two whole numbers below 100 (just the sum).", "add", data.add, True),
    Variant("add-numbers-equation", "Add two whole numbers below 100 and write the whole equation.", "add",
            lambda t: f"{t} = {data.add(t)}", False),
)
