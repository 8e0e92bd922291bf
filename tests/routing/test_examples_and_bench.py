"""The examples run offline against a local registry (as subprocesses, like a user runs them), and
the router benchmark runs on tiny shapes so it does not rot."""

from __future__ import annotations

import sys
from pathlib import Path

from registry_helpers import REPO, run_python
from synthetic import make_skills

from skillsoup.skills.loader import dump_skill_yaml
from skillsoup.skills.skill import Demonstration, Skill


def _registry(path: Path, model) -> Path:
    from skillsoup.registry import SkillRegistry

    with SkillRegistry.open(path, embedder="hash:256") as reg:
        reg.add(make_skills(), model)
    return path


def test_embed_router_example_dispatches_to_handlers(tmp_path, tiny_model):
    reg = _registry(tmp_path / "reg", tiny_model)
    r = run_python(["examples/embed_router.py", "--registry", str(reg),
                    "please set the alarm countdown for ten minutes", "convert miles to kilometers please"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0].startswith("timer service <-") and lines[1].startswith("unit converter <-"), r.stdout
    assert "Traceback" not in r.stderr


def test_answer_with_skills_example_runs_the_pipeline(tmp_path, tiny_model, mamba_dir):
    reg = _registry(tmp_path / "reg", tiny_model)
    files = tmp_path / "skills"
    files.mkdir()
    extra = Skill("shout", "shout words", tuple(Demonstration(w, w.upper()) for w in ("hi", "yes", "go")))
    (files / "shout.yaml").write_text(dump_skill_yaml(extra), encoding="utf-8")
    r = run_python(["examples/answer_with_skills.py", "--registry", str(reg), "--model", str(mamba_dir),
                    "--skills", str(files), "--max-tokens", "4", "please set the alarm countdown for ten minutes"])
    assert r.returncode == 0, r.stderr
    assert "-> " in r.stdout and "skills: timer" in r.stdout and "first token" in r.stdout
    assert len((REPO / "examples" / "answer_with_skills.py").read_text().splitlines()) <= 35
    from skillsoup.registry import SkillRegistry

    with SkillRegistry.open(reg) as registry:
        assert "shout" in registry  # the example added the skill file


def test_bench_router_runs_on_tiny_shapes(capsys, mamba_dir):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_router

    rows = bench_router.main(["--skills", "60", "--demos", "3", "--embedder", "hash:64", "--queries", "3",
                              "--answers", "1", "--new-tokens", "2", "--model", str(mamba_dir)])
    out = capsys.readouterr().out
    names = [name for name, _, _ in rows]
    assert "route[max] route" in names and "route[classifier] route" in names and "answer first_token_ms" in names
    assert all(p50 >= 0 and p95 >= p50 for _, p50, p95 in rows)
    assert "60 skills x 3 demonstrations" in out and "| route[max] embed" in out


def test_bench_routing_fit_runs_on_a_small_set(capsys):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import bench_routing_fit

    result = bench_routing_fit.main(["--embedder", "hash:64", "--train", "150", "--test", "40", "--latency-sample", "3"])
    out = capsys.readouterr().out
    assert result["after"]["fitted"] and not result["before"]["fitted"]
    assert "| macro_f1 |" in out and "baseline (nn-threshold)" in out
