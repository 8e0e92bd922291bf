"""A synthetic routing task: skills with their own vocabularies, labelled queries for them, and
out-of-scope queries (unrelated words, or words of several skills at once) labelled null."""

from __future__ import annotations

import json
import random
from pathlib import Path

from skillsoup.skills.skill import Demonstration, Skill

TOPICS = {
    "timer": "timer minutes alarm countdown seconds remind wake clock",
    "convert": "convert kilometers miles pounds kilograms celsius fahrenheit inches",
    "weather": "weather rain sunny forecast cloudy storm humidity wind",
    "email": "email address contact mailbox inbox sender recipient reply",
    "sentiment": "review happy terrible loved awful great disappointed wonderful",
    "reverse": "reverse backwards letters flip mirror spell string invert",
    "math": "add plus multiply divide subtract sum product quotient",
    "dates": "date january reformat weekday calendar month year tuesday",
}
FILLER = "please can you the a for me now quickly this my".split()
UNRELATED = "banana guitar volcano penguin castle orchestra galaxy bicycle pyramid lantern".split()


def _words(rng: random.Random, vocab: list[str], k: int) -> list[str]:
    return rng.sample(vocab, k)


def _sentence(rng: random.Random, words: list[str]) -> str:
    words = words + rng.sample(FILLER, 2)
    rng.shuffle(words)
    return " ".join(words)


def make_skills(n_demos: int = 8, seed: int = 0) -> list[Skill]:
    rng = random.Random(seed)
    skills = []
    for name, vocab in TOPICS.items():
        vocab = vocab.split()
        demos = tuple(Demonstration(_sentence(rng, _words(rng, vocab, 3)), f"{name}-{i}") for i in range(n_demos))
        skills.append(Skill(name, f"the {name} skill", demos))
    return skills


def make_labelled(n: int, seed: int = 1, null_share: float = 0.3) -> list[dict]:
    """In-scope queries (two words of one skill, sometimes one of another) and null queries
    (unrelated words, or one word from each of three skills)."""
    rng = random.Random(seed)
    names = list(TOPICS)
    out = []
    for _ in range(n):
        if rng.random() < null_share:
            if rng.random() < 0.5:
                words = rng.sample(UNRELATED, 3)
            else:
                words = [rng.choice(TOPICS[t].split()) for t in rng.sample(names, 3)]
            out.append({"query": _sentence(rng, words), "skill": None})
        else:
            skill = rng.choice(names)
            words = _words(rng, TOPICS[skill].split(), 2)
            if rng.random() < 0.4:
                words.append(rng.choice(TOPICS[rng.choice([t for t in names if t != skill])].split()))
            out.append({"query": _sentence(rng, words), "skill": skill})
    return out


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
