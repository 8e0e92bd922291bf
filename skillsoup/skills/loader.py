"""Read skill files (YAML, JSONL, Markdown; docs/skills.md) into :class:`~skillsoup.skills.skill.Skill` values.

``load_skills(paths)`` is the entry point: files and directories in, checked skills out, or one
:class:`~skillsoup.errors.SkillFileError` whose message says file, line, column and the fix.
``dump_skill_yaml(skill)`` writes a skill back as YAML (``skillsoup skills export``).

Module map: ``rules`` (limits and field checks shared by all formats), ``yaml`` (YAML reading
with line numbers, and writing), ``jsonl``, ``markdown``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from skillsoup.skills.jsonl import jsonl_skill_drafts
from skillsoup.skills.markdown import markdown_skill_drafts
from skillsoup.skills.rules import (
    MAX_DEMONSTRATIONS,
    MAX_DESCRIPTION_CHARS,
    MAX_FILE_BYTES,
    MAX_NAME_CHARS,
    MAX_TAG_CHARS,
    MAX_TAGS,
    MAX_TEXT_CHARS,
    NAME_PATTERN,
    SkillDraft,
    Where,
    build_skill,
    file_error,
)
from skillsoup.skills.skill import Skill
from skillsoup.skills.yaml import dump_skill_yaml, yaml_skill_drafts

__all__ = [
    "MAX_DEMONSTRATIONS", "MAX_DESCRIPTION_CHARS", "MAX_FILE_BYTES", "MAX_NAME_CHARS", "MAX_TAGS",
    "MAX_TAG_CHARS", "MAX_TEXT_CHARS", "NAME_PATTERN", "SKILL_FILE_SUFFIXES", "bundled_skills_dir",
    "bundled_skills_root", "dump_skill_yaml", "find_skill_files", "load_skill_file", "load_skills", "parse_skills",
]

logger = logging.getLogger(__name__)

_PARSERS: dict[str, Callable[[str, str], list[SkillDraft]]] = {
    ".yaml": yaml_skill_drafts,
    ".yml": yaml_skill_drafts,
    ".jsonl": jsonl_skill_drafts,
    ".md": markdown_skill_drafts,
}
SKILL_FILE_SUFFIXES = tuple(_PARSERS)
_SKIPPED_IN_DIRECTORIES = {"readme.md"}  # a folder's README documents it; it is not a skill


def load_skills(paths: Iterable[str | Path]) -> list[Skill]:
    """Every skill in ``paths`` (files, or directories read recursively), in order.

    A skill name may appear only once across all the inputs; a file reached twice (say, through
    its directory and by name) is read once.
    """
    skills: list[Skill] = []
    defined_at: dict[str, str] = {}  # name -> "file:line" of its first definition
    seen_files: set[Path] = set()
    for file in _expand(paths):
        if file.resolve() in seen_files:
            continue
        seen_files.add(file.resolve())
        for skill, where in _read_file(file):
            _reject_duplicate(skill, where, defined_at)
            skills.append(skill)
    return skills


def load_skill_file(path: str | Path) -> list[Skill]:
    """The skills of one file (its suffix says the format)."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    return load_skills([path])


def parse_skills(text: str, suffix: str, source: str = "<text>") -> list[Skill]:
    """The skills in ``text`` written in the format of files ending in ``suffix`` (".yaml", "md", ...)."""
    suffix = "." + suffix.lstrip(".").lower()
    if suffix not in _PARSERS:
        raise file_error(source, None, f"unknown skill format '{suffix}'; use one of {', '.join(_PARSERS)}")
    if len(text.encode()) > MAX_FILE_BYTES:
        raise _too_big(source, len(text.encode()))
    return [skill for skill, _ in _parse(source, suffix, _normalize(source, text))]


def find_skill_files(directory: str | Path) -> list[Path]:
    """Skill files under ``directory``, sorted, skipping hidden files and folders and README.md."""
    root = Path(directory)
    found = []
    for folder, subfolders, files in os.walk(root):  # does not follow links to folders (no cycles)
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        found += [Path(folder, name) for name in files if _is_skill_file_name(name)]
    return sorted(found, key=lambda file: file.relative_to(root).parts)


def _is_skill_file_name(name: str) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    return not name.startswith(".") and suffix in _PARSERS and name.lower() not in _SKIPPED_IN_DIRECTORIES


def _expand(paths: Iterable[str | Path]) -> list[Path]:
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            inside = find_skill_files(path)
            if not inside:
                raise file_error(str(path), None, f"no skill files in this directory; skill files end in "
                                                  f"{', '.join(_PARSERS)}")
            files += inside
        elif path.is_file():
            files.append(path)
        else:
            raise _missing(path)
    return files


def _missing(path: Path):
    return file_error(str(path), None, "no such file or directory; check the path")


def _too_big(path: str, size: int):
    return file_error(path, None, f"the file is {size:,} bytes; the limit is {MAX_FILE_BYTES:,} bytes "
                                  f"({MAX_FILE_BYTES / 2**20:g} MiB) per skill file, split it into several files")


def _read_file(path: Path) -> list[tuple[Skill, Where]]:
    suffix = path.suffix.lower()
    if suffix not in _PARSERS:
        raise file_error(str(path), None, f"unknown skill file type '{path.suffix}'; skill files end in "
                                          f"{', '.join(_PARSERS)} (see docs/skills.md)")
    text = _read_text(path)
    loaded = _parse(str(path), suffix, text)
    logger.debug("read %d skill(s) from %s", len(loaded), path)
    return loaded


def _parse(source: str, suffix: str, text: str) -> list[tuple[Skill, Where]]:
    return [(build_skill(draft), draft.where) for draft in _PARSERS[suffix](source, text)]


def _read_text(path: Path) -> str:
    """The file as text, after the size, encoding and emptiness checks."""
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)  # never read more than the limit
    except OSError as exc:
        raise file_error(str(path), None, f"cannot read the file ({exc.strerror or exc})") from None
    if len(data) > MAX_FILE_BYTES:
        raise _too_big(str(path), path.stat().st_size)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _not_utf8(str(path), data, exc.start) from None
    return _normalize(str(path), text)


def _not_utf8(path: str, data: bytes, offset: int):
    line_start = data.rfind(b"\n", 0, offset) + 1
    where = Where(data.count(b"\n", 0, offset) + 1, offset - line_start + 1)
    return file_error(path, where, f"not UTF-8: byte 0x{data[offset]:02x} at byte offset {offset} cannot be "
                                   "decoded; save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)")


def _normalize(path: str, text: str) -> str:
    """One text form for every platform: no byte-order mark, '\\n' line ends."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    if not text.strip():
        raise file_error(path, None, "the file is empty; a skill file holds at least one skill "
                                     "(docs/skills.md has an example of each format)")
    return text


def _reject_duplicate(skill: Skill, where: Where, defined_at: dict[str, str]) -> None:
    here = f"{skill.source}:{where.line}"
    if skill.name in defined_at:
        raise file_error(skill.source, where, f"skill '{skill.name}' is defined twice: at {defined_at[skill.name]} "
                                              f"and at {here}; rename or remove one of them")
    defined_at[skill.name] = here


def bundled_skills_root() -> Path | None:
    """The folder of skill files shipped with skillsoup (``demo/``, ``demo-alternates/``,
    ``pretrained/``): a source checkout's ``skills/``, else the copy a wheel installs as
    ``skillsoup/bundled_skills/`` (pyproject.toml maps one to the other). None when there is none."""
    package = Path(__file__).resolve().parents[1]  # skillsoup/
    checkout = package.parent
    candidates = ([checkout / "skills"] if (checkout / "pyproject.toml").is_file() else []) + [package / "bundled_skills"]
    return next((c for c in candidates if c.is_dir()), None)


def bundled_skills_dir() -> Path | None:
    """The skill files offered on first start: the bundle's ``demo/`` (the demo model's skills),
    else the whole bundle. None when there is none."""
    root = bundled_skills_root()
    for candidate in (root / "demo", root) if root is not None else ():
        if candidate.is_dir() and any(p.suffix in SKILL_FILE_SUFFIXES for p in candidate.rglob("*")):
            return candidate
    return None
