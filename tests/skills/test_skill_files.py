"""Skill files: the three formats, directories, YAML round trips, and every rejected input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from skillsoup.errors import SkillFileError
from skillsoup.skills.loader import (
    MAX_DEMONSTRATIONS,
    MAX_FILE_BYTES,
    MAX_TEXT_CHARS,
    dump_skill_yaml,
    find_skill_files,
    load_skill_file,
    load_skills,
    parse_skills,
)
from skillsoup.skills.skill import DEFAULT_TEMPLATE, Demonstration, Skill

PRETRAINED = Path(__file__).resolve().parents[2] / "skills" / "pretrained"
END_MARKER_TEMPLATE = "Q: {input}\nA: {output}\n###\n"  # lets outputs span lines

YAML_SKILL = """\
name: greet
description: Say hello — in any script.
tags: [demo, "ünï"]
template: "Q: {input}\\nA: {output}\\n###\\n"
demonstrations:
  - input: |-
      Hello
        indented line
    output: "Привет, 世界 👋"
  - input: "{\\"json\\": true}"
    output: |-
      line one
      line two
tests:
  - input: Bye
    output: Пока
"""

JSONL_SKILLS = """\
{"skill": "sentiment", "input": "I loved it", "output": "positive", "description": "Label sentiment.", "tags": ["x"]}

{"skill": "caps", "input": "abc", "output": "ABC", "description": "Upper-case.", "template": "In: {input} Out: {output}\\n"}
{"skill": "sentiment", "input": "Ужасно\\nплохо", "output": "negative", "description": "Label sentiment."}
{"skill": "sentiment", "input": "It was fine", "output": "neutral", "split": "test"}
{"skill": "sentiment", "input": "Great!", "output": "positive", "split": "demo"}
"""

MARKDOWN_SKILL = """\
---
name: fr
description: Translate English into French.
template: "English: {input}\\nFrench: {output}\\n###\\n"
tags: [translation]
---
# English to French

Notes for people are ignored until the first ## heading.

## Example 1: a greeting
### Input
Good morning, café owner.

### Output
Bonjour, propriétaire du café.

## A poem (any heading is an example)
### Input
```
## not a heading, inside a fence
  indented line

```
### Output
Roses are red,
  violets are blue.

## Example with a fence kept as text
### Input
````markdown
```python
print("hi")
```
````
### Output
```inline code``` is not a fence.

## Test
### Input
Thank you.
### Output
Merci.
"""


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def yaml_skill(name: str = "s", *pairs: tuple[str, str]) -> str:
    pairs = pairs or (("x", "y"),)
    items = "".join(f"  - input: {i}\n    output: {o}\n" for i, o in pairs)
    return f"name: {name}\ndescription: d\ndemonstrations:\n{items}"


# The formats -----------------------------------------------------------------------------------------

def test_yaml_skill_with_multiline_and_unicode_text(tmp_path):
    path = write(tmp_path, "greet.yaml", YAML_SKILL)
    [skill] = load_skills([path])
    assert skill == Skill(
        name="greet",
        description="Say hello — in any script.",
        demonstrations=(Demonstration("Hello\n  indented line", "Привет, 世界 👋"),
                        Demonstration('{"json": true}', "line one\nline two")),
        template=END_MARKER_TEMPLATE, tags=("demo", "ünï"), tests=(Demonstration("Bye", "Пока"),))
    assert skill.source == str(path)


def test_yaml_name_must_be_ascii_lowercase(tmp_path):
    unicode_name = YAML_SKILL.replace("name: greet", "name: grüße")
    with pytest.raises(SkillFileError, match=r"greet\.yaml:1:7: skill name 'grüße' is not valid.*e\.g\. 'gr-e'"):
        load_skills([write(tmp_path, "greet.yaml", unicode_name)])
    fixed = YAML_SKILL.replace("name: greet", "name: greet_unicode-2")
    assert load_skills([write(tmp_path, "ok.yaml", fixed)])[0].name == "greet_unicode-2"


def test_yaml_file_with_a_list_of_skills(tmp_path):
    text = "skills:\n  - " + yaml_skill("one").replace("\n", "\n    ") + "\n  - " + \
        yaml_skill("two", ("a", "b"), ("c", "d")).replace("\n", "\n    ")
    skills = load_skills([write(tmp_path, "many.yml", text)])
    assert [s.name for s in skills] == ["one", "two"]
    assert skills[1].demonstrations == (Demonstration("a", "b"), Demonstration("c", "d"))
    assert skills[0].template == DEFAULT_TEMPLATE and skills[0].tags == () and skills[0].tests == ()


def test_jsonl_groups_lines_by_skill(tmp_path):
    path = write(tmp_path, "mixed.jsonl", JSONL_SKILLS)
    sentiment, caps = load_skills([path])
    assert sentiment.name == "sentiment" and caps.name == "caps"  # order of first appearance
    assert sentiment.demonstrations == (Demonstration("I loved it", "positive"),
                                        Demonstration("Ужасно\nплохо", "negative"),
                                        Demonstration("Great!", "positive"))
    assert sentiment.tests == (Demonstration("It was fine", "neutral"),)
    assert sentiment.tags == ("x",) and sentiment.description == "Label sentiment."
    assert caps.template == "In: {input} Out: {output}\n"
    assert {sentiment.source, caps.source} == {str(path)}


def test_markdown_sections_fences_and_tests(tmp_path):
    [skill] = load_skills([write(tmp_path, "fr.md", MARKDOWN_SKILL)])
    assert skill.name == "fr" and skill.tags == ("translation",)
    assert skill.template == "English: {input}\nFrench: {output}\n###\n"
    assert skill.demonstrations == (
        Demonstration("Good morning, café owner.", "Bonjour, propriétaire du café."),
        Demonstration("## not a heading, inside a fence\n  indented line\n", "Roses are red,\n  violets are blue."),
        Demonstration('```python\nprint("hi")\n```', "```inline code``` is not a fence."),
    )
    assert skill.tests == (Demonstration("Thank you.", "Merci."),)


def test_windows_line_ends_and_byte_order_mark_are_read_as_plain_text(tmp_path):
    data = ("\ufeff" + MARKDOWN_SKILL).replace("\n", "\r\n").encode("utf-8")
    [skill] = load_skills([write(tmp_path, "fr.md", data)])
    assert skill.demonstrations[1].output == "Roses are red,\n  violets are blue."


def test_parse_skills_reads_text_without_a_file():
    [skill] = parse_skills(JSONL_SKILLS.splitlines()[2], ".jsonl", source="inline")
    assert skill.name == "caps" and skill.source == "inline"
    with pytest.raises(SkillFileError, match="unknown skill format '.txt'"):
        parse_skills("x", "txt")


# Directories -----------------------------------------------------------------------------------------

def test_directory_is_read_recursively_sorted_skipping_hidden_files_and_readme(tmp_path):
    write(tmp_path, "b/z.yaml", yaml_skill("z"))
    write(tmp_path, "b/a.jsonl", '{"skill": "a", "input": "x", "output": "y", "description": "d"}\n')
    write(tmp_path, "a.md", "---\nname: m\ndescription: d\n---\n## E\n### Input\nx\n### Output\ny\n")
    write(tmp_path, "c/deeper/k.yml", yaml_skill("k"))
    write(tmp_path, ".hidden.yaml", "not: a skill")
    write(tmp_path, ".git/x.yaml", "not: a skill")
    write(tmp_path, "README.md", "# About these skills")
    write(tmp_path, "notes.txt", "ignored in directories")
    assert [p.relative_to(tmp_path).as_posix() for p in find_skill_files(tmp_path)] == \
        ["a.md", "b/a.jsonl", "b/z.yaml", "c/deeper/k.yml"]
    assert [s.name for s in load_skills([tmp_path])] == ["m", "a", "z", "k"]


def test_a_file_reached_twice_is_read_once(tmp_path):
    path = write(tmp_path, "s.yaml", yaml_skill("s"))
    assert [s.name for s in load_skills([tmp_path, path])] == ["s"]


def test_duplicate_names_across_files_name_both_files(tmp_path):
    write(tmp_path, "one.yaml", yaml_skill("same"))
    write(tmp_path, "two.jsonl", '\n{"skill": "same", "input": "x", "output": "y", "description": "d"}\n')
    with pytest.raises(SkillFileError) as error:
        load_skills([tmp_path])
    message = str(error.value)
    assert "skill 'same' is defined twice" in message
    assert f"{tmp_path / 'one.yaml'}:1" in message and f"{tmp_path / 'two.jsonl'}:2" in message


def test_duplicate_names_in_one_yaml_file(tmp_path):
    text = "skills:\n  - " + yaml_skill("same").replace("\n", "\n    ") + "\n  - " + \
        yaml_skill("same").replace("\n", "\n    ")
    with pytest.raises(SkillFileError, match=r"dup\.yaml:8:5: skill 'same' is defined twice"):
        load_skills([write(tmp_path, "dup.yaml", text)])


# Round trips -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, content", [("greet.yaml", YAML_SKILL),
                                           ("mixed.jsonl", JSONL_SKILLS), ("fr.md", MARKDOWN_SKILL)])
def test_dump_then_load_gives_the_same_skill(tmp_path, name, content):
    for skill in load_skills([write(tmp_path, name, content)]):
        exported = write(tmp_path, f"export/{skill.name}.yaml", dump_skill_yaml(skill))
        assert load_skill_file(exported) == [skill]
        assert load_skill_file(exported)[0].content_hash == skill.content_hash


@pytest.mark.parametrize("text", [" leading space", "trailing space ", "a\n\nb", "\n starts with a newline",
                                  "tab\there", "yes", "123", "null", "# not a comment", "- not a list",
                                  "{braces}", "'quotes' \"both\"", "x: y", "ünï 世界", "\\back\\slash"])
def test_dump_round_trips_awkward_text(text):
    skill = Skill("awkward", "d", (Demonstration(text, text.replace("\n", " ")), Demonstration("x", "y")),
                  template=END_MARKER_TEMPLATE, tests=(Demonstration(text, "z"),))
    [back] = parse_skills(dump_skill_yaml(skill), "yaml")
    assert back == skill


def test_dump_uses_block_style_for_multiline_text():
    skill = Skill("s", "d", (Demonstration("one\ntwo", "y"),))
    assert "input: |-\n    one\n    two\n" in dump_skill_yaml(skill)
    assert "template" not in dump_skill_yaml(skill)  # the default is implied


# Rejected inputs -------------------------------------------------------------------------------------

FRONT = "---\nname: m\ndescription: d\n---\n"
DEMO = '"description": "d"'
BAD_FILES = [
    # (file name, content, line or None, message substring)
    ("out-number.yaml", yaml_skill("s", ("x", "42")), 5, "demonstration 1: output is a number (42)"),
    ("out-bool.yaml", yaml_skill("s", ("x", "yes")), 5, 'must be text; write it in quotes, e.g. "yes"'),
    ("out-float.yaml", yaml_skill("s", ("x", "3.5")), 5, 'must be text; write it in quotes, e.g. "3.5"'),
    ("out-date.yaml", yaml_skill("s", ("x", "2024-01-31")), 5, "output is a date"),
    ("out-null.yaml", yaml_skill("s", ("x", "")), 5, "output is empty (null)"),
    ("in-list.yaml", yaml_skill("s", ("[a]", "y")), 4, "demonstration 1: input is a list"),
    ("typo.yaml", yaml_skill() + "demonstration: []\n", 6, "unknown key 'demonstration' in a skill (did you mean "
                                                           "'demonstrations'?)"),
    ("pair-key.yaml", yaml_skill() + "    note: n\n", 6, "unknown key 'note' in an item of 'demonstrations'"),
    ("no-output.yaml", "name: s\ndescription: d\ndemonstrations:\n  - input: x\n", 4, "has no 'output'"),
    ("not-list.yaml", "name: s\ndescription: d\ndemonstrations: x\n", 3, "'demonstrations' is a string"),
    ("no-demos.yaml", "name: s\ndescription: d\ndemonstrations: []\n", 1, "skill 's' has no demonstrations"),
    ("no-desc.yaml", "name: s\ndemonstrations: []\n", 1, "the skill has no 'description'"),
    ("blank-desc.yaml", yaml_skill().replace("description: d", "description: ' '"), 2,
     "description of skill 's' is empty"),
    ("bad-name.yaml", yaml_skill("My Skill"), 1, "skill name 'My Skill' is not valid"),
    ("long-name.yaml", yaml_skill("a" * 65), 1, "65 characters long; the limit is 64"),
    ("no-output-slot.yaml", yaml_skill() + "template: 'Q: {input}'\n", 6, "{output} exactly once (found 0)"),
    ("two-inputs.yaml", yaml_skill() + "template: '{input}{input} {output}'\n", 6, "{input} exactly once (found 2)"),
    ("reversed.yaml", yaml_skill() + "template: '{output} {input}'\n", 6, "put {input} before {output}"),
    ("tags.yaml", yaml_skill() + "tags: pretrained\n", 6, "'tags' is a string"),
    ("final-newline.yaml", "name: s\ndescription: d\ndemonstrations:\n  - input: x\n    output: |\n      y\n", 5,
     "output contains '\\n', where this template ends an answer"),
    ("colon.yaml", yaml_skill("s", ("x", "Answer: yes")), 5, "text containing ': ' must be quoted"),
    ("tab.yaml", "name: s\n\tdescription: d\n", 2, "indent with spaces, not tabs"),
    ("dup-key.yaml", yaml_skill() + "name: t\n", 6, "duplicate key 'name' (first given at line 1)"),
    ("two-docs.yaml", yaml_skill() + "---\nname: t\n", 6, "remove the extra '---' line"),
    ("list.yaml", "- name: s\n", 1, "the file holds a list"),
    ("comments.yaml", "# nothing yet\n", 1, "holds no YAML data"),
    ("skills-plus.yaml", "skills: []\nname: s\n", 2, "key 'name' next to 'skills:'"),
    ("bad-json.jsonl", f'{{"skill": "s", "input": "x", "output": "y", {DEMO}}}\n{{"skill": "s" "input": 1}}\n', 2,
     "invalid JSON (Expecting ',' delimiter)"),
    ("jsonl-number.jsonl", f'\n{{"skill": "s", "input": "x", "output": 7, {DEMO}}}\n', 2, "output is a number (7)"),
    ("jsonl-missing.jsonl", '{"skill": "s", "input": "x"}\n', 1, "this line has no 'output'"),
    ("jsonl-key.jsonl", f'{{"skill": "s", "input": "x", "output": "y", "label": 1, {DEMO}}}\n', 1,
     "unknown key 'label' in a JSONL line"),
    ("jsonl-split.jsonl", f'{{"skill": "s", "input": "x", "output": "y", "split": "train", {DEMO}}}\n', 1,
     "'split' is 'train'"),
    ("jsonl-disagree.jsonl", f'{{"skill": "s", "input": "x", "output": "y", {DEMO}}}\n'
                             '{"skill": "s", "input": "x", "output": "y", "description": "e"}\n', 2,
     "'description' of skill 's' differs from the one on line 1"),
    ("jsonl-no-desc.jsonl", '{"skill": "s", "input": "x", "output": "y"}\n', 1,
     "skill 's' has no description; add \"description\""),
    ("jsonl-array.jsonl", "[1, 2]\n", 1, "this line holds a list, not a JSON object"),
    ("jsonl-twice.jsonl", '{"skill": "s", "skill": "t"}\n', 1, "key 'skill' appears twice"),
    ("jsonl-name.jsonl", '{"skill": 3, "input": "x", "output": "y"}\n', 1, "'skill' is a number (3)"),
    ("no-front.md", "## E\n### Input\nx\n### Output\ny\n", 1, "starts with YAML front matter"),
    ("open-front.md", "---\nname: m\n", 1, "never closed"),
    ("front-yaml.md", "---\nname: m\ndescription: [d\n---\n", 4, "invalid YAML"),
    ("front-demos.md", "---\nname: m\ndescription: d\ndemonstrations: []\n---\n", 4,
     "write each pair as a '## Example'"),
    ("md-no-output.md", FRONT + "## E\n### Input\nx\n## F\n", 5, "section 'E' has no '### Output'"),
    ("md-order.md", FRONT + "## E\n### Output\ny\n### Input\nx\n", 8, "'### Input' must come before '### Output'"),
    ("md-twice.md", FRONT + "## E\n### Input\nx\n### Input\nx\n", 8, "a second '### Input'"),
    ("md-fence.md", FRONT + "## E\n### Input\n```\nx\n### Output\ny\n", 7, "this code fence is never closed"),
    ("md-heading.md", FRONT + "## E\n### Input\nx\n# Title\n### Output\ny\n", 8, "heading '# Title' inside"),
    ("md-sub.md", FRONT + "## E\n### Notes\n", 6, "heading '### Notes' inside the examples"),
    ("md-early.md", FRONT + "### Input\nx\n", 5, "before the first '## Example' section"),
    ("md-prose.md", FRONT + "## E\nInput: x\n", 6, "in section 'E'; write '### Input' on a line of its own"),
    ("md-note.md", FRONT + "## E\nA note.\n", 6, "in section 'E'; put it under one of them"),
    ("md-empty.md", FRONT + "## E\n### Input\nx\n### Output\n\n", 8, "demonstration 1: output is empty"),
    ("md-no-sections.md", FRONT + "Just notes.\n", 1, "skill 'm' has no demonstrations"),
    ("deep.yaml", "a: " + "[" * 100_000 + "]" * 100_000, 1, "nested more than 16 deep"),
    ("deep.md", "---\nname: m\ndescription: d\ntags:\n" + "".join(" " * i + "-\n" for i in range(50)) + "---\n",
     20, "nested more than 16 deep"),
    ("deep.jsonl", '{"skill": ' + "[" * 100_000 + "]" * 100_000 + "}\n", 1, "nested too deeply"),
    ("nul.yaml", "name: s\x00\ndescription: d\n", 1, "the text holds the control character U+0000"),
    ("nul.md", "---\nname: m\ndescription: d\x00\n---\n", 3, "the text holds the control character U+0000"),
    ("nul.jsonl", '{"skill": "s\x00", "input": "i", "output": "o"}\n', 1, "invalid JSON"),
    ("empty.yaml", "", None, "the file is empty"),
    ("blank.jsonl", "\n  \n", None, "the file is empty"),
    ("latin1.yaml", "name: s\ndescription: caf\xe9\n".encode("latin-1"), 2,
     "not UTF-8: byte 0xe9 at byte offset 24"),
    ("skill.txt", "name: s\n", None, "unknown skill file type '.txt'"),
    ("long.yaml", yaml_skill("s", ("x" * (MAX_TEXT_CHARS + 1), "y")), 4,
     f"input is {MAX_TEXT_CHARS + 1} characters long; the limit is {MAX_TEXT_CHARS}"),
    ("many.jsonl", "".join(f'{{"skill": "s", "input": "{i}", "output": "y", {DEMO}}}\n'
                           for i in range(MAX_DEMONSTRATIONS + 1)), MAX_DEMONSTRATIONS + 1,
     f"skill 's' has {MAX_DEMONSTRATIONS + 1} demonstrations; the limit is {MAX_DEMONSTRATIONS}"),
]


@pytest.mark.parametrize("name, content, line, message", BAD_FILES, ids=[case[0] for case in BAD_FILES])
def test_bad_file_is_rejected_with_file_line_and_fix(tmp_path, name, content, line, message):
    path = write(tmp_path, name, content)
    with pytest.raises(SkillFileError) as error:
        load_skills([path])
    text = str(error.value)
    assert message in text
    assert text.startswith(f"{path}:{line}:" if line is not None else f"{path}: "), text


def test_non_utf8_error_gives_line_and_column(tmp_path):
    path = write(tmp_path, "bad.md", b"---\nname: m\ndescription: ok \xff\n---\n")
    with pytest.raises(SkillFileError, match=r"bad\.md:3:17: not UTF-8: byte 0xff at byte offset 28"):
        load_skills([path])


def test_file_over_the_size_limit_is_rejected_before_parsing(tmp_path):
    path = write(tmp_path, "big.jsonl", b" " * (MAX_FILE_BYTES + 1))
    with pytest.raises(SkillFileError, match=r"big\.jsonl: the file is 5,242,881 bytes; the limit is 5,242,880"):
        load_skills([path])


def test_missing_paths_and_empty_directories_are_rejected(tmp_path):
    with pytest.raises(SkillFileError, match=r"nope\.yaml: no such file or directory"):
        load_skills([tmp_path / "nope.yaml"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SkillFileError, match="no skill files in this directory"):
        load_skills([tmp_path / "empty"])
    with pytest.raises(SkillFileError, match="no such file"):
        load_skill_file(tmp_path / "empty")


def test_limits_allow_the_maximum(tmp_path):
    lines = "".join(f'{{"skill": "s", "input": "{i}", "output": "{"y" * MAX_TEXT_CHARS}", {DEMO}}}\n'
                    for i in range(MAX_DEMONSTRATIONS))
    [skill] = load_skills([write(tmp_path, "max.jsonl", lines)])
    assert len(skill.demonstrations) == MAX_DEMONSTRATIONS


def test_yaml_is_read_safely(tmp_path):
    path = write(tmp_path, "evil.yaml", yaml_skill() + "template: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(SkillFileError, match=r"evil\.yaml:6:\d+: invalid YAML \(could not determine a constructor"):
        load_skills([path])


# The pretrained examples -----------------------------------------------------------------------------

def test_pretrained_example_skills_load():
    skills = load_skills([PRETRAINED])
    assert len(skills) >= 3
    assert {Path(s.source).suffix for s in skills} >= {".yaml", ".jsonl", ".md"}
    for skill in skills:
        assert "pretrained" in skill.tags, skill.name
        assert 8 <= len(skill.demonstrations) <= 12, skill.name
        assert len(skill.tests) >= 2, skill.name
        for test in skill.tests:
            assert test not in skill.demonstrations, f"{skill.name}: a test repeats a demonstration"


def test_the_examples_in_the_docs_load():
    docs = (Path(__file__).resolve().parents[2] / "docs" / "skills.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^(`{3,})(yaml|json|markdown)\n(.*?)^\1$", docs, flags=re.MULTILINE | re.DOTALL)
    suffixes = {"yaml": ".yaml", "json": ".jsonl", "markdown": ".md"}
    loaded = [parse_skills(text, suffixes[kind], source=f"docs ({kind})") for _, kind, text in blocks]
    assert [kind for _, kind, _ in blocks] == ["yaml", "json", "markdown", "yaml"]  # the last: an exported composite
    assert all(len(skills) == 1 and skills[0].demonstrations for skills in loaded)
    assert [skills[0].recipe is not None for skills in loaded] == [False, False, False, True]


def test_markdown_test_sections_are_told_by_their_first_word():
    sections = "".join(f"## {title}\n### Input\n{i}\n### output:\nx\n\n"
                       for i, title in enumerate(["Test", "Tests: dates", "Testing the waters", "Contest", "TEST 3"]))
    [skill] = parse_skills("---\nname: m\ndescription: d\n---\n" + sections, "md")
    assert [d.input for d in skill.demonstrations] == ["2", "3"]
    assert [d.input for d in skill.tests] == ["0", "1", "4"]
