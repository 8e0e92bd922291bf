"""Skill files -> Skill values: YAML, JSONL and Markdown, checked with file:line errors.

    Skill, Demonstration      one skill: name, description, demonstrations, template, tags, tests
    load_skills(paths)        files and folders -> [Skill] (duplicates across files refused)
    parse_skills(text, kind)  one file's text -> [Skill]
The formats live in ``yaml``, ``jsonl`` and ``markdown``; the rules every format shares in ``rules``.
"""

from skillsoup.skills.loader import (
    SKILL_FILE_SUFFIXES,
    bundled_skills_dir,
    bundled_skills_root,
    dump_skill_yaml,
    find_skill_files,
    load_skill_file,
    load_skills,
    parse_skills,
)
from skillsoup.skills.skill import DEFAULT_TEMPLATE, Demonstration, Skill

__all__ = [
    "DEFAULT_TEMPLATE", "SKILL_FILE_SUFFIXES", "Demonstration", "Skill", "bundled_skills_dir", "bundled_skills_root",
    "dump_skill_yaml", "find_skill_files", "load_skill_file", "load_skills", "parse_skills",
]
