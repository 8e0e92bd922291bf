"""JSONL skill files: one demonstration (or held-out test) per line, any number of skills per file.

A skill's description, template and tags may sit on any of its lines; when repeated they must agree.
The description is required (on at least one line of each skill): the router reads it, and a default
made from the file name would change the skill's content hash whenever the file is renamed.
"""

from __future__ import annotations

import json

from skillsoup.skills.rules import Located, SkillDraft, Where, check_keys, describe_type, file_error

JSONL_KEYS = ("skill", "input", "output", "split", "description", "template", "tags")
SPLITS = ("demo", "test")
_EXAMPLE = '{"skill": "my-skill", "input": "...", "output": "..."}'


class _DuplicateKey(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict:
    record: dict = {}
    for key, value in pairs:
        if key in record:
            raise _DuplicateKey(key)
        record[key] = value
    return record


def parse_line(path: str, number: int, line: str) -> dict:
    try:
        record = json.loads(line, object_pairs_hook=_object_without_duplicates)
    except json.JSONDecodeError as exc:
        raise file_error(path, Where(number, exc.colno), f"invalid JSON ({exc.msg}); each line must be one "
                                                         f"JSON object like {_EXAMPLE}") from None
    except RecursionError:
        raise file_error(path, Where(number), "lists and objects are nested too deeply on this line") from None
    except _DuplicateKey as exc:
        raise file_error(path, Where(number), f"key '{exc}' appears twice on this line; keep only one") from None
    if not isinstance(record, dict):
        raise file_error(path, Where(number), f"this line holds {describe_type(record)}, not a JSON object; "
                                              f"write one object per line like {_EXAMPLE}")
    return record


def jsonl_skill_drafts(path: str, text: str) -> list[SkillDraft]:
    """Group the lines by skill, in order of first appearance; blank lines are skipped."""
    drafts: dict[str, SkillDraft] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if line.strip():
            _add_record(path, number, parse_line(path, number, line), drafts)
    if not drafts:
        raise file_error(path, None, f"no skill lines found; write one JSON object per line like {_EXAMPLE}")
    for name, draft in drafts.items():
        if "description" not in draft.fields:
            raise file_error(path, draft.where, f"skill '{name}' has no description; add "
                                                '"description": "What this skill does." to one of its lines')
    return list(drafts.values())


def _add_record(path: str, number: int, record: dict, drafts: dict[str, SkillDraft]) -> None:
    where = Where(number)
    check_keys(path, {key: where for key in record}, JSONL_KEYS, "a JSONL line")
    for key in ("skill", "input", "output"):
        if key not in record:
            raise file_error(path, where, f"this line has no '{key}'; every line needs skill, input and output, "
                                          f"e.g. {_EXAMPLE}")
    name = record["skill"]
    if not isinstance(name, str):
        raise file_error(path, where, f"'skill' is {describe_type(name)}; it must be the skill's name as a "
                                      'string, e.g. "skill": "my-skill"')
    draft = drafts.get(name)
    if draft is None:
        draft = drafts[name] = SkillDraft(path, where, {"name": Located(name, where)})
    for key in ("description", "template", "tags"):
        if key in record:
            _set_once(path, draft, key, Located(record[key], where))
    split = record.get("split", "demo")
    if split not in SPLITS:
        raise file_error(path, where, f"'split' is {split!r}; use \"demo\" (a demonstration, the default) or "
                                      "\"test\" (a held-out pair for evaluation)")
    draft.add_pair(Located(record["input"], where), Located(record["output"], where), where, split == "test")


def _set_once(path: str, draft: SkillDraft, key: str, found: Located) -> None:
    earlier = draft.fields.get(key)
    if earlier is not None and earlier.value != found.value:
        name = draft.fields["name"].value
        raise file_error(path, found.where, f"'{key}' of skill '{name}' differs from the one on line "
                                            f"{earlier.where.line}; give it once, or the same on every line")
    draft.fields.setdefault(key, found)
