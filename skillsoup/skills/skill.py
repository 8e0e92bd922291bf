"""Skill: a named set of demonstrations (the source of truth; states are derived from it).

Rendering is plain text substitution of ``{input}`` and ``{output}`` (not str.format, so braces in
JSON outputs are safe). The state of a skill is the model's state after reading
``render_demonstrations()``; a query is then read as ``render_query(query)`` and the model writes the
output, which ends where the template's text after ``{output}`` begins (``stop_strings``). A
skill with a ``recipe`` is a composite: its state is a mix of other skills' states (skills/recipe.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from skillsoup.skills.recipe import Recipe

DEFAULT_TEMPLATE = "Input: {input}\nOutput: {output}\n"
_PLACEHOLDER = re.compile(r"\{(input|output)\}")


@dataclass(frozen=True)
class Demonstration:
    input: str
    output: str


@dataclass(frozen=True)
class Skill:
    name: str  # lowercase letters, digits, '-' and '_'
    description: str
    demonstrations: tuple[Demonstration, ...]
    template: str = DEFAULT_TEMPLATE
    tags: tuple[str, ...] = ()
    tests: tuple[Demonstration, ...] = ()  # held-out pairs for evaluation, never rendered into the state
    source: str = field(default="", compare=False)  # file it came from; not part of the content
    # a composite's recipe (skills/recipe.py) when the skill came from an exported composite; the
    # registry keeps it beside the row, so it is not part of the content hashes either
    recipe: Recipe | None = None

    def render_demonstration(self, demo: Demonstration) -> str:
        # one pass, so an input that contains the text "{output}" stays as written
        values = {"input": demo.input, "output": demo.output}
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], self.template)

    def render_demonstrations(self, k: int | None = None) -> str:
        """The text whose state is the skill's state: the first ``k`` (default all) demonstrations."""
        demos = self.demonstrations if k is None else self.demonstrations[:k]
        return "".join(self.render_demonstration(d) for d in demos)

    def render_query(self, query: str) -> str:
        """The template up to ``{output}`` with the query filled in, trailing spaces removed (the
        model writes the space, as it read it in the demonstrations)."""
        head = self.template.split("{output}", 1)[0]
        return head.replace("{input}", query).rstrip(" \t")

    def stop_strings(self) -> list[str]:
        """Where an answer ends: the template text after ``{output}`` (or the start of the next
        demonstration when nothing follows it)."""
        tail = self.template.split("{output}", 1)[1] if "{output}" in self.template else ""
        if tail.strip():  # a visible end marker: stop as soon as it is written
            return [tail.rstrip()]
        if tail.strip(" \t"):
            return [tail.rstrip(" \t")]
        head = self.template.split("{input}", 1)[0]
        return [head] if head.strip() else ["\n"]

    def content_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "template": self.template,
            "demonstrations": [[d.input, d.output] for d in self.demonstrations],
            "tags": list(self.tags),
            "tests": [[d.input, d.output] for d in self.tests],
        }

    @property
    def content_hash(self) -> str:
        """sha256 of everything the skill says (not where it came from)."""
        blob = json.dumps(self.content_dict(), sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()

    @property
    def state_hash(self) -> str:
        """sha256 of what the state depends on: template and demonstrations."""
        blob = json.dumps([self.template, [[d.input, d.output] for d in self.demonstrations]], ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()
