"""The rules every skill file format shares: limits, field checks, and errors that say where.

Each format (YAML, JSONL, Markdown) turns its text into :class:`SkillDraft` values that remember the
line (and column, where known) of every field; :func:`build_skill` checks them all in one place and
builds the :class:`~skillsoup.skills.skill.Skill`. Messages read ``FILE:LINE:COLUMN: what is wrong; how to
fix it`` so an editor or terminal can jump to the spot.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field

from skillsoup.errors import SkillFileError
from skillsoup.skills.recipe import Recipe
from skillsoup.skills.skill import DEFAULT_TEMPLATE, Demonstration, Skill

MAX_FILE_BYTES = 5 * 1024 * 1024  # one skill file; split bigger collections into several files
MAX_TEXT_CHARS = 8_000  # one demonstration input or output
MAX_DEMONSTRATIONS = 512  # per skill (and as many held-out tests)
MAX_NAME_CHARS = 64
MAX_DESCRIPTION_CHARS = 2_000  # the router embeds it; a paragraph is plenty
MAX_TAGS = 32
MAX_TAG_CHARS = 64
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DOCS = "docs/skills.md"


@dataclass(frozen=True)
class Where:
    """A 1-based position in a file; ``column`` is None where the parser does not give one."""

    line: int
    column: int | None = None

    def __str__(self) -> str:
        return f"{self.line}" if self.column is None else f"{self.line}:{self.column}"


@dataclass(frozen=True)
class Located:
    """A value as the file wrote it (not yet checked), with where it starts."""

    value: object
    where: Where


@dataclass
class PairDraft:
    """One ``{input, output}`` pair: a demonstration or a held-out test."""

    input: Located
    output: Located
    where: Where
    kind: str  # "demonstration" or "test"
    number: int  # 1-based among pairs of the same kind in the skill


@dataclass
class SkillDraft:
    path: str
    where: Where  # where the skill starts
    fields: dict[str, Located] = field(default_factory=dict)  # name, description, template, tags
    demonstrations: list[PairDraft] = field(default_factory=list)
    tests: list[PairDraft] = field(default_factory=list)

    def add_pair(self, input: Located, output: Located, where: Where, is_test: bool) -> None:
        pairs = self.tests if is_test else self.demonstrations
        kind = "test" if is_test else "demonstration"
        pairs.append(PairDraft(input, output, where, kind, len(pairs) + 1))


def file_error(path: str, where: Where | None, message: str) -> SkillFileError:
    """``FILE:LINE:COLUMN: message`` (or ``FILE: message`` when no position applies)."""
    return SkillFileError(f"{path}: {message}" if where is None else f"{path}:{where}: {message}")


def describe_type(value: object) -> str:
    """How a wrongly typed value reads in a message, with the YAML surprises spelled out."""
    if value is None:
        return "empty (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()}; YAML reads yes/no/on/off/true/false as booleans)"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    return f"a {type(value).__name__} ({value})"  # e.g. a date: YAML reads 2024-01-31 as one


def check_keys(path: str, keys: dict[object, Where], allowed: tuple[str, ...], what: str, hint: str = "") -> None:
    """Reject keys a format does not define (a typo would otherwise be silently ignored)."""
    for key, where in keys.items():
        if key in allowed:
            continue
        close = difflib.get_close_matches(str(key), allowed, n=1)
        guess = f" (did you mean '{close[0]}'?)" if close else ""
        raise file_error(path, where, f"unknown key '{key}' in {what}{guess}; allowed keys: "
                                      f"{', '.join(allowed)}{hint}")


def build_skill(draft: SkillDraft) -> Skill:
    """Check every field of ``draft`` and build the skill, or raise :class:`SkillFileError`."""
    name = _check_name(draft)
    description = _check_description(draft, name)
    template = _check_template(draft)
    tags = _check_tags(draft)
    demonstrations = _check_pairs(draft, name, draft.demonstrations, "demonstrations")
    tests = _check_pairs(draft, name, draft.tests, "tests")
    skill = Skill(name=name, description=description, demonstrations=demonstrations, template=template,
                  tags=tags, tests=tests, source=draft.path, recipe=_check_recipe(draft, name))
    _check_outputs_can_end(draft, skill)
    return skill


def _required_string(draft: SkillDraft, key: str, example: str) -> tuple[str, Where]:
    found = draft.fields.get(key)
    if found is None:
        raise file_error(draft.path, draft.where, f"the skill has no '{key}'; add one, e.g. {example}")
    return _string(draft.path, found, f"'{key}'", example), found.where


def _string(path: str, found: Located, what: str, example: str) -> str:
    if not isinstance(found.value, str):
        raise file_error(path, found.where, f"{what} is {describe_type(found.value)}, but it must be text; "
                                            f"write it in quotes, e.g. {example}")
    return found.value


def _check_name(draft: SkillDraft) -> str:
    name, where = _required_string(draft, "name", "name: my-skill")
    if len(name) > MAX_NAME_CHARS:
        raise file_error(draft.path, where, f"skill name '{name[:20]}...' is {len(name)} characters long; "
                                            f"the limit is {MAX_NAME_CHARS}, use a shorter name")
    if not NAME_PATTERN.match(name):
        slug = re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-_") or "my-skill"
        raise file_error(draft.path, where, f"skill name '{name}' is not valid: use lowercase letters, digits, "
                                            f"'-' and '_', starting with a letter or digit (e.g. '{slug[:64]}')")
    return name


def _check_description(draft: SkillDraft, name: str) -> str:
    text, where = _required_string(draft, "description", "description: What this skill does.")
    if not text.strip():
        raise file_error(draft.path, where, f"the description of skill '{name}' is empty; say in a sentence "
                                            "what the skill does (the router reads it)")
    if len(text) > MAX_DESCRIPTION_CHARS:
        raise file_error(draft.path, where, f"the description of skill '{name}' is {len(text)} characters; "
                                            f"the limit is {MAX_DESCRIPTION_CHARS}, shorten it")
    return text


def _check_template(draft: SkillDraft) -> str:
    found = draft.fields.get("template")
    if found is None:
        return DEFAULT_TEMPLATE
    example = '"Q: {input}\\nA: {output}\\n"'
    template = _string(draft.path, found, "'template'", f"template: {example}")
    for placeholder in ("{input}", "{output}"):
        count = template.count(placeholder)
        if count != 1:
            raise file_error(draft.path, found.where, f"the template must contain {placeholder} exactly once "
                                                      f"(found {count}), e.g. template: {example}")
    if template.index("{input}") > template.index("{output}"):
        raise file_error(draft.path, found.where, "the template must put {input} before {output}: the model "
                                                  f"reads the input, then writes the output, e.g. {example}")
    return template


def _check_tags(draft: SkillDraft) -> tuple[str, ...]:
    found = draft.fields.get("tags")
    if found is None:
        return ()
    if not isinstance(found.value, list):
        raise file_error(draft.path, found.where, f"'tags' is {describe_type(found.value)}, but it must be a "
                                                  "list of strings, e.g. tags: [pretrained, translation]")
    if len(found.value) > MAX_TAGS:
        raise file_error(draft.path, found.where, f"{len(found.value)} tags; the limit is {MAX_TAGS}")
    for tag in found.value:
        if not isinstance(tag, str) or not tag.strip() or "\n" in tag or len(tag) > MAX_TAG_CHARS:
            shown = describe_type(tag) if not isinstance(tag, str) else repr(tag)
            raise file_error(draft.path, found.where, f"tag {shown} is not valid: each tag is a non-empty "
                                                      f"one-line string of at most {MAX_TAG_CHARS} characters")
    return tuple(found.value)


def _check_recipe(draft: SkillDraft, name: str) -> Recipe | None:
    found = draft.fields.get("recipe")
    if found is None:
        return None
    try:
        recipe = Recipe.from_dict(found.value)
    except ValueError as exc:
        raise file_error(draft.path, found.where, f"the recipe of composite skill '{name}' is not valid: {exc} "
                                                  f"(skillsoup skills export writes it; {DOCS})") from None
    names = [p.name for p in recipe.parts]
    if name in names or len(set(names)) < len(names):
        what = "itself" if name in names else f"'{next(n for n in names if names.count(n) > 1)}' twice"
        raise file_error(draft.path, found.where, f"composite skill '{name}' lists {what} among its sources")
    return recipe


def _check_pairs(draft: SkillDraft, name: str, pairs: list[PairDraft], key: str) -> tuple[Demonstration, ...]:
    if key == "demonstrations" and not pairs:
        raise file_error(draft.path, draft.where, f"skill '{name}' has no demonstrations; add at least one "
                                                  f"input/output pair ({DOCS} shows how in each format)")
    if len(pairs) > MAX_DEMONSTRATIONS:
        raise file_error(draft.path, pairs[MAX_DEMONSTRATIONS].where,
                         f"skill '{name}' has {len(pairs)} {key}; the limit is {MAX_DEMONSTRATIONS} per skill: "
                         "keep the best ones or split the skill")
    return tuple(Demonstration(_check_text(draft.path, p, p.input, "input"),
                               _check_text(draft.path, p, p.output, "output")) for p in pairs)


def _quoted(value: object) -> str:
    """The example of a fix for a value YAML read as something other than text: it, in quotes."""
    if isinstance(value, bool):  # yes / no / on / off / true / false, unquoted
        return '"yes"' if value else '"no"'
    return f'"{value}"' if isinstance(value, (int, float)) else '"42"'


def _check_text(path: str, pair: PairDraft, found: Located, side: str) -> str:
    what = f"{pair.kind} {pair.number}: {side}"
    text = _string(path, found, what, _quoted(found.value))
    if not text.strip():
        raise file_error(path, found.where, f"{what} is empty; write the {side} text")
    if len(text) > MAX_TEXT_CHARS:
        raise file_error(path, found.where, f"{what} is {len(text)} characters long; the limit is "
                                            f"{MAX_TEXT_CHARS} characters, shorten it")
    return text


def _check_outputs_can_end(draft: SkillDraft, skill: Skill) -> None:
    """An output that contains a stop string could never be generated whole: the answer is cut there."""
    stops = skill.stop_strings()
    for pair in draft.demonstrations + draft.tests:
        text = pair.output.value
        for stop in stops:
            if stop in text:
                raise file_error(draft.path, pair.output.where, (
                    f"{pair.kind} {pair.number}: output contains {stop!r}, where this template ends an answer "
                    "(the text after {output}); keep outputs on one line (in YAML use '|-' or a quoted string "
                    "to drop the final newline), or end the template with a marker after {output}, e.g. "
                    r'template: "Input: {input}\nOutput: {output}\n###\n"'))
