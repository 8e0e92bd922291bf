"""YAML skill files (and the YAML front matter of Markdown skills), read with line numbers.

The loader is a subclass of PyYAML's SafeLoader, so it builds only plain data (the standard tags, as
``yaml.safe_load`` does, never Python objects); it also records where every mapping value and list
item starts, so a wrong value is reported at its own line, and it rejects duplicate keys, which
PyYAML would otherwise resolve silently by keeping the last one. Nesting deeper than a skill can
need is refused before composing: libyaml's composer recurses in C and a 100 kB file of ``[[[[``
would crash the process.
"""

from __future__ import annotations

from collections.abc import Hashable

import yaml

from skillsoup.skills.rules import Located, SkillDraft, Where, check_keys, describe_type, file_error
from skillsoup.skills.skill import DEFAULT_TEMPLATE, Skill

SKILL_KEYS = ("name", "description", "demonstrations", "template", "tags", "tests", "recipe")
PAIR_KEYS = ("input", "output")
_SAFE_BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when present: same rules, 5-50x faster
MAX_NESTING = 16  # a skill needs 5 levels; libyaml's composer recurses in C and crashes near 50,000
_TOO_DEEP = (f"lists and mappings nested more than {MAX_NESTING} deep; a skill needs 5 levels at most, "
             "check the brackets and indentation")
_HINTS = {  # PyYAML problems a newcomer meets first, with the usual fix
    "mapping values are not allowed": "text containing ': ' must be quoted, e.g. output: \"Answer: yes\"",
    "cannot start any token": "indent with spaces, not tabs",
    "tab character": "indent with spaces, not tabs",
    "expected a single document": "a file holds one YAML document: remove the extra '---' line",
}


class LocatedDict(dict):
    """A YAML mapping that knows where it and each of its values start."""

    where: Where
    positions: dict  # key -> where its value starts
    key_positions: dict  # key -> where the key itself is written

    def where_of(self, key: object) -> Where:
        return self.positions.get(key, self.where)


class LocatedList(list):
    """A YAML list that knows where it and each of its items start."""

    where: Where
    positions: list


class _LocatingSafeLoader(_SAFE_BASE):
    line_offset = 0  # lines of the file before the YAML text (Markdown front matter)

    def where(self, node: yaml.Node) -> Where:
        return Where(node.start_mark.line + 1 + self.line_offset, node.start_mark.column + 1)


def _construct_mapping(loader: _LocatingSafeLoader, node: yaml.MappingNode):
    mapping = LocatedDict()
    mapping.where, mapping.positions, mapping.key_positions = loader.where(node), {}, {}
    yield mapping
    _reject_duplicate_keys(loader, node)
    loader.flatten_mapping(node)  # '<<' merge keys, as safe_load does
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            raise yaml.constructor.ConstructorError(
                None, None, "found a key that is not a plain word; keys look like name:", key_node.start_mark)
        mapping[key] = loader.construct_object(value_node, deep=False)
        mapping.positions[key] = loader.where(value_node)
        mapping.key_positions[key] = loader.where(key_node)


def _reject_duplicate_keys(loader: _LocatingSafeLoader, node: yaml.MappingNode) -> None:
    seen: dict[str, yaml.Node] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        if key_node.value in seen:
            first = loader.where(seen[key_node.value]).line
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key_node.value}' (first given at line {first}); keep only one",
                key_node.start_mark)
        seen[key_node.value] = key_node


def _construct_sequence(loader: _LocatingSafeLoader, node: yaml.SequenceNode):
    items = LocatedList()
    items.where, items.positions = loader.where(node), [loader.where(child) for child in node.value]
    yield items
    items.extend(loader.construct_object(child, deep=False) for child in node.value)


_LocatingSafeLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_LocatingSafeLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)


def load_located_yaml(path: str, text: str, line_offset: int = 0) -> object:
    """Parse one YAML document safely; errors name the file, line and column."""
    _check_nesting(path, text, line_offset)
    loader = _LocatingSafeLoader(text)
    loader.line_offset = line_offset
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(path, exc, line_offset) from None
    except yaml.YAMLError as exc:
        raise file_error(path, None, f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _check_nesting(path: str, text: str, line_offset: int) -> None:
    """Stop absurdly nested input before composing it (the event parser keeps its stack on the heap)."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_SAFE_BASE):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_NESTING:
                    where = Where(event.start_mark.line + 1 + line_offset, event.start_mark.column + 1)
                    raise file_error(path, where, _TOO_DEEP)
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(path, exc, line_offset) from None
    except yaml.reader.ReaderError as exc:  # a control character such as NUL: not a MarkedYAMLError
        raise _reader_error(path, text, exc, line_offset) from None


def _reader_error(path: str, text: str, exc: yaml.reader.ReaderError, line_offset: int):
    before = text[: exc.position]
    where = Where(before.count("\n") + 1 + line_offset, exc.position - (before.rfind("\n") + 1) + 1)
    char = exc.character if isinstance(exc.character, str) else chr(exc.character)
    return file_error(path, where, f"the text holds the control character U+{ord(char):04X}, which YAML does not "
                                   "allow; remove it (was the file saved as text?)")


def _syntax_error(path: str, exc: yaml.MarkedYAMLError, line_offset: int):
    mark = exc.problem_mark or exc.context_mark
    where = Where(mark.line + 1 + line_offset, mark.column + 1) if mark else None
    problem = ": ".join(part for part in (exc.context, exc.problem) if part) or "syntax error"
    if "maximum nesting depth" in problem:  # PyYAML >= 6.0.4 stops deep nesting in its scanner, before our check
        return file_error(path, where, _TOO_DEEP)
    if problem.startswith("duplicate key") or problem.startswith("found a key"):
        return file_error(path, where, problem)
    hint = next((fix for text, fix in _HINTS.items() if text in problem), "check indentation and quoting here")
    return file_error(path, where, f"invalid YAML ({problem}); {hint}")


def yaml_skill_drafts(path: str, text: str) -> list[SkillDraft]:
    """A mapping is one skill; a mapping with only ``skills:`` holds a list of them."""
    data = load_located_yaml(path, text)
    if data is None:
        raise file_error(path, Where(1), "the file holds no YAML data (only comments?); a YAML skill file holds "
                                         "one skill (name:, description:, demonstrations:)")
    if not isinstance(data, LocatedDict):
        where = getattr(data, "where", Where(1))
        raise file_error(path, where, f"the file holds {describe_type(data)}; a YAML skill file holds one skill "
                                      "(name:, description:, demonstrations:) or a list under 'skills:'")
    if "skills" not in data:
        return [_mapping_draft(path, data)]
    if len(data) > 1:
        extra = next(key for key in data if key != "skills")
        raise file_error(path, data.key_positions[extra], f"key '{extra}' next to 'skills:'; with 'skills:' every "
                                                     "skill's keys go inside its own list item")
    skills = data["skills"]
    if not isinstance(skills, LocatedList) or not skills:
        raise file_error(path, data.where_of("skills"), f"'skills' is {describe_type(skills)}; it must be a "
                                                        "non-empty list of skills (- name: ...)")
    return [_mapping_draft(path, _mapping(path, item, where, "each item of 'skills'"))
            for item, where in zip(skills, skills.positions)]


def _mapping(path: str, value: object, where: Where, what: str) -> LocatedDict:
    if not isinstance(value, LocatedDict):
        raise file_error(path, where, f"{what} is {describe_type(value)}; it must be a mapping (key: value lines)")
    return value


def _mapping_draft(path: str, mapping: LocatedDict, allowed: tuple[str, ...] = SKILL_KEYS,
                   what: str = "a skill") -> SkillDraft:
    check_keys(path, mapping.key_positions, allowed, what)
    draft = SkillDraft(path, mapping.where)
    for key in ("name", "description", "template", "tags", "recipe"):
        if key in mapping:
            draft.fields[key] = Located(mapping[key], mapping.where_of(key))
    for key, is_test in (("demonstrations", False), ("tests", True)):
        if key in mapping:
            _add_pairs(path, draft, mapping[key], mapping.where_of(key), key, is_test)
    return draft


def _add_pairs(path: str, draft: SkillDraft, items: object, where: Where, key: str, is_test: bool) -> None:
    if not isinstance(items, LocatedList):
        raise file_error(path, where, f"'{key}' is {describe_type(items)}; it must be a list of pairs like "
                                      "'- input: ...' / '  output: ...'")
    for item, item_where in zip(items, items.positions):
        pair = _mapping(path, item, item_where, f"an item of '{key}'")
        check_keys(path, pair.key_positions, PAIR_KEYS, f"an item of '{key}'")
        for side in PAIR_KEYS:
            if side not in pair:
                raise file_error(path, pair.where, f"an item of '{key}' has no '{side}'; each item has "
                                                   "'input:' and 'output:'")
        draft.add_pair(Located(pair["input"], pair.where_of("input")),
                       Located(pair["output"], pair.where_of("output")), pair.where, is_test)


def front_matter_draft(path: str, text: str, line_offset: int, allowed: tuple[str, ...], hint: str) -> SkillDraft:
    """The skill fields of a Markdown file's front matter (its pairs come from the sections)."""
    data = load_located_yaml(path, text, line_offset)
    mapping = _mapping(path, data, Where(line_offset + 1), "the front matter")
    for key in ("demonstrations", "tests"):
        if key in mapping:
            raise file_error(path, mapping.key_positions[key], f"'{key}' in the front matter{hint}")
    return _mapping_draft(path, mapping, allowed, "the front matter")


# Writing ---------------------------------------------------------------------------------------------

class _SkillDumper(yaml.SafeDumper):
    """Block style (``|``) for multi-line text, so exported files read like the ones people write."""


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    # PyYAML falls back to a quoted style by itself when a block scalar could not round-trip
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_SkillDumper.add_representer(str, _represent_text)


def dump_skill_yaml(skill: Skill) -> str:
    """The skill as a YAML skill file; loading it gives back an equal skill (``source`` aside), a
    composite's recipe included."""
    data: dict[str, object] = {"name": skill.name, "description": skill.description}
    if skill.tags:
        data["tags"] = list(skill.tags)
    if skill.template != DEFAULT_TEMPLATE:
        data["template"] = skill.template
    if skill.recipe is not None:  # a composite: what add needs to mix it again (docs/skills.md)
        data["recipe"] = skill.recipe.to_dict()
    data["demonstrations"] = [{"input": d.input, "output": d.output} for d in skill.demonstrations]
    if skill.tests:
        data["tests"] = [{"input": d.input, "output": d.output} for d in skill.tests]
    return yaml.dump(data, Dumper=_SkillDumper, sort_keys=False, allow_unicode=True, width=100)
