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
