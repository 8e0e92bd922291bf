"""The demo model's world: 16 agent-style skills (plus their alternate answer formats), generated
queries, and a fixed train / held-out split.

A query says what to do; the demonstrations say how to write the answer (skillsoup/demo/catalog.py).
Each *intent* ("which quarter is 2024-03-12") has two format variants ("Q1 2024",
"2024-Q1"), all trained on, so a query alone leaves the format a guess that demonstrations -- or an
injected skill state -- settle. One variant per intent is a bundled skill (``SKILLS``); the others
(``ALTERNATES``) ship as skill files a user can add to switch conventions. Intents of one *family*
share their data:

    phrase   "quiet river stone"     caps, acronym, count, identifier
    date     "2024-03-12"            us-date, long-date, quarter
    contact  "Ana Souza <ana@acme.io>"  save-contact, who, domain
    review   "the soup was great"    mood, topic
    timer, reminder, quantity, sum   one intent each

Splits are a property of the data alone (a hash), shared by every skill of a family, so data held
out for one skill is never seen in training under another: ``split_of(data)`` is "heldout" (15%),
"demo" (5%, the demonstrations written into skill files) or "train" (80%).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from skillsoup.demo.catalog import INTENTS, TOOL_TEMPLATE, VARIANTS, Intent, Variant
from skillsoup.skills.skill import Demonstration, Skill

SPLITS = ("train", "demo", "heldout")
__all__ = ["TOOL_TEMPLATE", "DemoSkill", "SKILLS", "ALTERNATES", "ALL_SKILLS", "FAMILIES", "INTENT_VARIANTS"]


class VariantFacts:
    """What a demo skill reads off its ``variant`` and ``intent_def`` (shared by corpus v1 and v2)."""

    name = property(lambda self: self.variant.name)
    description = property(lambda self: self.variant.description)
    intent = property(lambda self: self.intent_def.name)
    family = property(lambda self: self.intent_def.family)
    template = property(lambda self: self.intent_def.template)
    bundled = property(lambda self: self.variant.bundled)


@dataclass(frozen=True)
class DemoSkill(VariantFacts):
    """One answer format of one intent."""

    variant: Variant
    intent_def: Intent

    def data_of(self, query: str) -> str:
        """The data a query carries (what the split is decided on)."""
        return self.intent_def.data_of(query)

    def answer(self, query: str) -> str:
        return self.variant.render(self.data_of(query))

    def pair(self, query: str) -> Demonstration:
        return Demonstration(query, self.answer(query))


def split_of(text: str) -> str:
    """The split a piece of data belongs to, from a hash of its text (stable across runs and machines)."""
    bucket = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") % 100
    return "heldout" if bucket < 15 else "demo" if bucket < 20 else "train"


_INTENTS = {i.name: i for i in INTENTS}
ALL_SKILLS: tuple[DemoSkill, ...] = tuple(DemoSkill(v, _INTENTS[v.intent]) for v in VARIANTS)
SKILLS: tuple[DemoSkill, ...] = tuple(s for s in ALL_SKILLS if s.bundled)  # one per intent, in intent order
ALTERNATES: tuple[DemoSkill, ...] = tuple(s for s in ALL_SKILLS if not s.bundled)
SKILLS_BY_NAME = {s.name: s for s in ALL_SKILLS}
FAMILIES: dict[str, tuple[str, ...]] = {}  # family -> its bundled skills
INTENT_VARIANTS: dict[str, tuple[str, ...]] = {}  # intent -> all its skills, the bundled one first
for _s in ALL_SKILLS:
    if _s.bundled:
        FAMILIES[_s.family] = FAMILIES.get(_s.family, ()) + (_s.name,)
    INTENT_VARIANTS[_s.intent] = INTENT_VARIANTS.get(_s.intent, ()) + (_s.name,)


def get_skill(name: str) -> DemoSkill:
    try:
        return SKILLS_BY_NAME[name]
    except KeyError:
        raise KeyError(f"no demo skill {name!r}; the demo skills are {', '.join(SKILLS_BY_NAME)}") from None


# ---- sampling ----------------------------------------------------------------------------------------
def sample_inputs(skill: DemoSkill | str, n: int, split: str = "train", seed: int = 0,
                  rng: random.Random | None = None) -> list[str]:
    """``n`` queries of ``skill`` with distinct data from ``split``, deterministic for (intent,
    split, seed): the variants of one intent get the same queries, the intents of one family the
    same data. Pass ``rng`` to draw from a running generator instead (the training stream)."""
    skill = get_skill(skill) if isinstance(skill, str) else skill
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    data_rng = rng or random.Random(f"{skill.family}:{split}:{seed}")
    form_rng = rng or random.Random(f"{skill.intent}:{split}:{seed}")
    return draw_distinct(lambda: skill.intent_def.make_data(data_rng), lambda text: skill.intent_def.query(form_rng, text),
                         n, split, f"inputs for {skill.name}")


def draw_distinct(draw, make, n: int, split: str | None, what: str, tries: int | None = None) -> list:
    """``make(text)`` for the first ``n`` distinct texts ``draw()`` gives that fall in ``split`` (None:
    any) (``make`` runs only for those, right after their draw); ValueError if ``tries`` draws fall short."""
    seen: dict[str, object] = {}
    for _ in range(tries or 200 * n + 1000):
        if len(seen) == n:
            break
        text = draw()
        if (split is None or split_of(text) == split) and text not in seen:
            seen[text] = make(text)
    if len(seen) < n:
        raise ValueError(f"could not draw {n} distinct {split} {what}")
    return list(seen.values())


def sample_pairs(skill: DemoSkill | str, n: int, split: str = "train", seed: int = 0) -> list[Demonstration]:
    """``n`` (query, answer) pairs of ``skill`` with distinct data from ``split``."""
    skill = get_skill(skill) if isinstance(skill, str) else skill
    return [skill.pair(text) for text in sample_inputs(skill, n, split, seed)]


def episode(rng: random.Random, k: int, split: str = "train") -> tuple[DemoSkill, list[Demonstration], str, str]:
    """One few-shot episode: a skill drawn uniformly from every variant (bundled or not), ``k``
    demonstrations and a query, all with distinct data from ``split`` -> (skill, demos, query, answer)."""
    skill = rng.choice(ALL_SKILLS)
    pairs = [skill.pair(t) for t in sample_inputs(skill, k + 1, split, rng=rng)]
    return skill, pairs[:k], pairs[k].input, pairs[k].output


def render_episode(skill: DemoSkill, pairs: list[Demonstration]) -> tuple[str, list[tuple[int, int]]]:
    """Text of ``pairs`` rendered with the skill's template, and the (start, end) character span of
    each output including the text that ends it (what the model must write after the query)."""
    return render_pairs(skill.template, pairs)


def render_pairs(template: str, pairs) -> tuple[str, list[tuple[int, int]]]:
    """:func:`render_episode` for any ``template`` and pairs with ``.input`` and ``.output``."""
    head, tail = template.split("{output}", 1)
    text, spans = "", []
    for p in pairs:
        text += head.replace("{input}", p.input).rstrip(" \t")
        start = len(text)
        text += head[len(head.rstrip(" \t")):] + p.output + tail
        spans.append((start, len(text)))
    return text, spans


def skill_object(name: str, n_demos: int = 8, split: str = "demo", seed: int = 0, n_tests: int = 50) -> Skill:
    """The demo skill as a :class:`~skillsoup.skills.skill.Skill`: ``n_demos`` demonstrations from ``split``
    (default the "demo" slice, never trained on) and ``n_tests`` held-out tests."""
    s = get_skill(name)
    if split == "heldout":
        raise ValueError("demonstrations must not come from the held-out split (the tests do)")
    tags = ("demo-model", s.family) + (() if s.bundled else ("alternate", s.intent))
    return Skill(
        name=s.name, description=s.description, demonstrations=tuple(sample_pairs(s, n_demos, split, seed)),
        template=s.template, tags=tags, tests=tuple(sample_pairs(s, n_tests, "heldout", seed)),
    )
