"""Markdown skill files: YAML front matter, then one ``##`` section per demonstration.

::

    ---
    name: english-to-french
    description: Translate English sentences into French.
    ---
    # Any title and notes (ignored until the first ## heading)

    ## Example: a greeting           <- any ## heading starts a demonstration
    ### Input
    Good morning.
    ### Output
    Bonjour.

    ## Test                          <- a ## heading whose first word is Test/Tests: a held-out pair

Headings count only at the start of a line and outside code fences. A body is its lines with the
blank lines around them removed; a body that is exactly one fenced code block (fence at column 1)
is the text inside the fence, verbatim. Any other heading inside the examples is an error, so a
typo never silently merges two examples: put text that holds Markdown headings in a code fence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from skillsoup.skills.rules import Located, SkillDraft, Where, file_error
from skillsoup.skills.yaml import front_matter_draft

FRONT_MATTER_KEYS = ("name", "description", "template", "tags")
_HEADING = re.compile(r"^(#{1,6})(?:[ \t]+(.*?))?[ \t#]*$")
_FENCE_OPEN = re.compile(r"^( {0,3})(`{3,}|~{3,})(.*)$")
_TEST_TITLE = re.compile(r"^tests?\b", re.IGNORECASE)
_FRONT_MATTER_HELP = "start the file with a '---' line, then name: and description:, then a '---' line"


@dataclass
class _Block:
    """The lines under ``### Input`` or ``### Output``."""

    heading_line: int
    lines: list[tuple[int, str]] = field(default_factory=list)  # (line number, text)


@dataclass
class _Section:
    title: str
    line: int
    blocks: dict[str, _Block] = field(default_factory=dict)  # "input" / "output"


def markdown_skill_drafts(path: str, text: str) -> list[SkillDraft]:
    lines = text.split("\n")
    front_matter_end = _front_matter_end(path, lines)
    hint = ": in Markdown, write each pair as a '## Example' (or '## Test') section with '### Input' and '### Output'"
    draft = front_matter_draft(path, "\n".join(lines[1:front_matter_end]), 1, FRONT_MATTER_KEYS, hint)
    draft.where = Where(1)  # the skill is the whole file
    for section in _Scanner(path).scan(lines, front_matter_end + 1):
        _add_section(path, draft, section)
    return [draft]


def _front_matter_end(path: str, lines: list[str]) -> int:
    """Index of the line that closes the front matter."""
    if lines[0].rstrip() != "---":
        raise file_error(path, Where(1), f"a Markdown skill starts with YAML front matter: {_FRONT_MATTER_HELP}")
    for index in range(1, len(lines)):
        if lines[index].rstrip() == "---":
            return index
    raise file_error(path, Where(1), f"the front matter opened on line 1 is never closed; {_FRONT_MATTER_HELP}")


class _Scanner:
    """Reads the body line by line, tracking code fences, and collects the sections."""

    def __init__(self, path: str):
        self.path = path
        self.sections: list[_Section] = []
        self.block: _Block | None = None
        self.fence: tuple[str, int, int] | None = None  # (fence character, length, line opened)

    def scan(self, lines: list[str], start: int) -> list[_Section]:
        for index in range(start, len(lines)):
            self._line(index + 1, lines[index])
        if self.fence is not None:
            raise file_error(self.path, Where(self.fence[2]), "this code fence is never closed; add a closing "
                                                              f"line of {self.fence[1]} '{self.fence[0]}'")
        self._close_section()
        return self.sections

    def _line(self, number: int, line: str) -> None:
        if self.fence is not None:
            if _closes_fence(line, self.fence):
                self.fence = None
        elif opened := _fence_opener(line):
            self.fence = (opened.group(2)[0], len(opened.group(2)), number)
        elif heading := _HEADING.match(line):
            self._heading(number, len(heading.group(1)), (heading.group(2) or "").strip())
            return
        self._text(number, line)

    def _text(self, number: int, line: str) -> None:
        if self.block is not None:
            self.block.lines.append((number, line))
        elif self.sections and line.strip():
            side = line.split(":", 1)[0].strip().title() if ":" in line else ""
            fix = f"write '### {side}' on a line of its own, the text below it" if side in ("Input", "Output") \
                else "put it under one of them"
            raise file_error(self.path, Where(number), f"text outside '### Input' / '### Output' in section "
                                                       f"'{self.sections[-1].title}'; {fix}")

    def _heading(self, number: int, level: int, title: str) -> None:
        if level == 2:
            self._close_section()
            self.sections.append(_Section(title, number))
            self.block = None
        elif level == 1 and not self.sections:
            pass  # a title above the examples
        elif level == 3 and self.sections and title.lower().rstrip(":") in ("input", "output"):
            self._open_block(number, title.lower().rstrip(":"))
        else:
            where = "before the first '## Example' section" if not self.sections else "inside the examples"
            raise file_error(self.path, Where(number), (
                f"heading '{'#' * level} {title}' {where}: a '##' heading starts an example, then '### Input' "
                "and '### Output' hold its text; put text that contains Markdown headings in a code fence"))

    def _open_block(self, number: int, side: str) -> None:
        section = self.sections[-1]
        if side in section.blocks:
            raise file_error(self.path, Where(number), f"a second '### {side.title()}' in section "
                                                       f"'{section.title}'; each section has one input and one output")
        if side == "input" and "output" in section.blocks:
            raise file_error(self.path, Where(number), "'### Input' must come before '### Output'")
        self.block = section.blocks[side] = _Block(number)

    def _close_section(self) -> None:
        if not self.sections:
            return
        section = self.sections[-1]
        for side in ("input", "output"):
            if side not in section.blocks:
                raise file_error(self.path, Where(section.line), f"section '{section.title}' has no "
                                                                 f"'### {side.title()}'; add one with its text")


def _fence_opener(line: str) -> re.Match | None:
    opened = _FENCE_OPEN.match(line)
    if opened and opened.group(2)[0] == "`" and "`" in opened.group(3):
        return None  # ```code``` on one line is inline code, not a fence (as in CommonMark)
    return opened


def _closes_fence(line: str, fence: tuple[str, int, int]) -> bool:
    stripped = line.strip()
    char, length, _ = fence
    return len(line) - len(line.lstrip(" ")) <= 3 and len(stripped) >= length and stripped == char * len(stripped)


def _add_section(path: str, draft: SkillDraft, section: _Section) -> None:
    values = {side: _block_text(block) for side, block in section.blocks.items()}
    draft.add_pair(values["input"], values["output"], Where(section.line), bool(_TEST_TITLE.match(section.title)))


def _block_text(block: _Block) -> Located:
    lines = list(block.lines)
    while lines and not lines[0][1].strip():
        lines.pop(0)
    while lines and not lines[-1][1].strip():
        lines.pop()
    if not lines:
        return Located("", Where(block.heading_line))
    texts = [text for _, text in lines]
    inside = _unfenced(texts)
    return Located("\n".join(texts) if inside is None else inside, Where(lines[0][0]))


def _unfenced(texts: list[str]) -> str | None:
    """The inside of a body that is exactly one code fence opened at column 1, else None."""
    opened = _fence_opener(texts[0])
    if not opened or opened.group(1) or len(texts) < 2:
        return None
    fence = (opened.group(2)[0], len(opened.group(2)), 0)
    for index in range(1, len(texts)):
        if _closes_fence(texts[index], fence):
            return "\n".join(texts[1:index]) if index == len(texts) - 1 else None
    return None
