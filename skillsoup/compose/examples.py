"""The examples a composite is searched on: (input, output) pairs from a JSONL file, checked like
skill files, and their seeded split into search and held-out parts."""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path

from skillsoup.errors import MixError, SkillFileError
from skillsoup.skills.jsonl import parse_line
from skillsoup.skills.rules import MAX_FILE_BYTES, Located, SkillDraft, Where, build_skill, check_keys, file_error
from skillsoup.skills.skill import DEFAULT_TEMPLATE, Demonstration

EXAMPLE_KEYS = ("input", "output")


def load_examples(path: str | Path, template: str | None = None) -> list[Demonstration]:
    """(input, output) pairs from a JSONL file, one ``{"input": ..., "output": ...}`` object a line.
    Checked like skill files (file:line in every message); given ``template``, outputs that contain
    its stop string are refused (they could never be generated whole)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise file_error(str(path), None, f"the file is over {MAX_FILE_BYTES // 2**20} MiB; use fewer examples")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SkillFileError(f"examples file {path} does not exist; pass a JSONL file with --examples") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SkillFileError(f"cannot read examples file {path}: {exc}; it must be UTF-8 JSONL") from None
    where0 = Where(1)
    draft = SkillDraft(str(path), where0, {"name": Located("examples", where0), "description": Located("examples", where0),
                                           "template": Located(template or DEFAULT_TEMPLATE, where0)})
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        record, where = parse_line(str(path), number, line), Where(number)
        check_keys(str(path), {key: where for key in record}, EXAMPLE_KEYS, "an example line")
        for key in EXAMPLE_KEYS:
            if key not in record:
                raise file_error(str(path), where, f"this line has no '{key}'; write one object per line like "
                                                   '{"input": "...", "output": "..."}')
        draft.add_pair(Located(record["input"], where), Located(record["output"], where), where, False)
    if not draft.demonstrations:
        raise file_error(str(path), None, 'no examples found; write one {"input": "...", "output": "..."} per line')
    return list(build_skill(draft).demonstrations)


def split_examples(examples: Sequence[Demonstration], holdout: float, seed: int) -> tuple[list, list]:
    """(search, held-out): a seeded shuffle, ``floor(holdout * n)`` held out, at least one searched."""
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0 <= holdout < 1:
        raise MixError(f"--holdout must be a fraction in [0, 1), got {holdout!r}")
    order = list(range(len(examples)))
    random.Random(f"compose-split:{seed}").shuffle(order)
    n_hold = int(math.floor(holdout * len(examples)))
    held = [examples[i] for i in sorted(order[:n_hold])]
    return [examples[i] for i in sorted(order[n_hold:])], held
