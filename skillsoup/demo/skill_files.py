"""Write the demo skills as skill files in all three formats (docs/skills.md)."""

from __future__ import annotations

from pathlib import Path

from skillsoup.demo.corpus import ALTERNATES, SKILLS, skill_object

# the demo skills ship in all three skill-file formats: these families go to JSONL / Markdown
_JSONL_FAMILIES = ("date",)
_MARKDOWN_FAMILIES = ("review",)


def write_skill_files(out_dir: str | Path, n_demos: int = 8, n_tests: int = 20, seed: int = 0,
                      alternates: bool = False) -> list[Path]:
    """Write the bundled demo skills (docs/skills.md formats): the date skills as one JSONL file, the
    review skills as Markdown, the others as ``<name>.yaml`` -> the paths. ``alternates=True`` writes
    the alternate answer formats instead, one YAML file each (skills/demo-alternates/)."""
    from skillsoup.skills.loader import dump_skill_yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths, jsonl_lines = [], []
    for s in ALTERNATES if alternates else SKILLS:
        skill = skill_object(s.name, n_demos, "demo", seed, n_tests)
        if s.family in _JSONL_FAMILIES and not alternates:
            jsonl_lines += _jsonl_lines(skill)
            continue
        suffix = "md" if s.family in _MARKDOWN_FAMILIES and not alternates else "yaml"
        path = out / f"{s.name}.{suffix}"
        path.write_text(_markdown(skill) if suffix == "md" else dump_skill_yaml(skill), encoding="utf-8")
        paths.append(path)
    if jsonl_lines:
        path = out / "dates.jsonl"
        path.write_text("\n".join(jsonl_lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def _jsonl_lines(skill) -> list[str]:
    import json

    rows = [("demo", d) for d in skill.demonstrations] + [("test", d) for d in skill.tests]
    lines = []
    for i, (split, d) in enumerate(rows):
        row = {"skill": skill.name, "input": d.input, "output": d.output, "split": split}
        if i == 0:
            row.update(description=skill.description, template=skill.template, tags=list(skill.tags))
        lines.append(json.dumps(row, ensure_ascii=False))
    return lines


def _markdown(skill) -> str:
    import yaml

    front = {"name": skill.name, "description": skill.description, "template": skill.template, "tags": list(skill.tags)}
    parts = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", f"# {skill.name}", ""]
    for i, d in enumerate(skill.demonstrations, 1):
        parts += [f"## Example {i}", "### Input", d.input, "### Output", d.output, ""]
    for i, d in enumerate(skill.tests, 1):
        parts += [f"## Test {i}", "### Input", d.input, "### Output", d.output, ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Regenerate the shipped skill files: ``python -m skillsoup.demo.skill_files [SKILLS_DIR]``."""
    import shutil
    import sys

    root = Path((argv if argv is not None else sys.argv[1:] or ["skills"])[0])
    for folder, alternates in (("demo", False), ("demo-alternates", True)):
        shutil.rmtree(root / folder, ignore_errors=True)
        write_skill_files(root / folder, alternates=alternates)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
