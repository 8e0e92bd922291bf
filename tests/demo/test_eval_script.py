"""scripts/eval_demo_model.py runs end to end, router columns included (tiny n)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "eval_demo_model.py"


def test_eval_script_fills_every_column(capsys):
    spec = importlib.util.spec_from_file_location("eval_demo_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script loads
    spec.loader.exec_module(module)
    assert module.main(["--skills", "date-us,sentiment", "--n", "2", "--k", "1", "--demos", "2"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| skill"))
    assert "router (text)" in header and "router (state)" in header
    rows = [line for line in out.splitlines() if line.startswith("| date-us") or line.startswith("| sentiment")]
    assert len(rows) == 2 and all(" - " not in row for row in rows)  # every column measured
    assert "identical answers on" in out and "top match is the right skill" in out


def test_eval_script_v2_reports_heldout_phrasings_no_skill_and_goals(tmp_path, capsys):
    """--corpus v2 on a tiny untrained Mamba-2 (made by the training script): every v2 column and
    line is there, and the goals read as pass/fail."""
    train_spec = importlib.util.spec_from_file_location("train_demo_model", SCRIPT.parent / "train_demo_model.py")
    train = importlib.util.module_from_spec(train_spec)
    sys.modules[train_spec.name] = train
    train_spec.loader.exec_module(train)
    assert train.main(["--preset", "v2-pilot", "--hidden", "16", "--layers", "1", "--head-dim", "8", "--state", "8",
                       "--batch", "2", "--max-pairs", "2", "--steps", "1", "--out", str(tmp_path / "m")]) == 0
    spec = importlib.util.spec_from_file_location("eval_demo_model", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    md = tmp_path / "eval.md"
    assert module.main(["--corpus", "v2", "--model", str(tmp_path / "m"), "--skills", "date-us,add-numbers", "--n", "2",
                        "--k", "1", "--demos", "2", "--routers", "", "--markdown", str(md)]) == 0
    text = md.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| skill"))
    assert "zero-shot" in header and "1-shot" in header and "2-shot" in header and "held-out phrasings (2)" in header
    assert '"no skill for that" on held-out requests' in text and "zero-shot (no demonstrations)" in text
    goals = [line for line in text.splitlines() if line.startswith("| ") and ("**pass**" in line or "**FAIL**" in line)]
    assert len(goals) == 4 and "**FAIL**" in goals[0]  # an untrained model misses the mean
