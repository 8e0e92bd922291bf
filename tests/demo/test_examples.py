"""The README's tour as a newcomer runs it: the Python snippet (taken from README.md) and both
examples, as subprocesses on the bundled demo model, bundled skill files and the real text embedder,
answering what the README says they answer; the compose examples file is what docs/compose.md says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from skillsoup.demo import corpus, model_dir, skills_dir

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
ROUTED_FILES = ("timer-call.yaml", "metric-convert.yaml", "reminder-call.yaml", "sentiment.md", "dates.jsonl")


def _env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSOUP_")}  # a newcomer's defaults
    env.update(SKILLSOUP_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    for leaked in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):  # set by in-process CLI tests
        env.pop(leaked, None)
    return env


def _run(args: list[str], tmp_path: Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600, env=_env(tmp_path),
                          cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and "Loading weights" not in done.stderr, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def demo_registry(tmp_path_factory) -> Path:
    """Five bundled skill files (seven skills) on the demo model, indexed with the default embedder."""
    from skillsoup import load_model, load_skills
    from skillsoup.registry import SkillRegistry

    path = tmp_path_factory.mktemp("demo-registry") / "reg"
    with SkillRegistry.open(path, embedder="all-MiniLM-L6-v2") as reg:
        reg.add(load_skills([skills_dir() / f for f in ROUTED_FILES]), load_model(model_dir()))
    return path


@pytest.mark.slow
def test_the_readme_python_snippet_runs_as_written(tmp_path):
    blocks = re.findall(r"^```python\n(.*?)^```", README, flags=re.S | re.M)
    (snippet,) = [b for b in blocks if "SkillSoup.open" in b]
    (tmp_path / "snippet.py").write_text(snippet, encoding="utf-8")
    out = _run(["snippet.py"], tmp_path, cwd=tmp_path).stdout.splitlines()
    assert out[0].startswith("timer(minutes=5) (SkillMatch(name='timer-call', score=") and "Timings(" in out[0]
    assert out[1:] == ["timer(minutes=12)", "timer(minutes=12)"]
    assert (tmp_path / "timer-call.safetensors").is_file()


@pytest.mark.slow
def test_embed_router_sends_requests_to_the_apps_handlers(demo_registry, tmp_path):
    """Before, its handlers were keyed "timer" and "convert", so only the fallback ever ran."""
    queries = ["set a timer for 5 minutes", "convert 3 km", "remind me to call mom at 5pm",
               "what is the capital of France"]
    out = _run(["examples/embed_router.py", "--registry", str(demo_registry), *queries], tmp_path).stdout.splitlines()
    assert out[0] == "timer service <- 'set a timer for 5 minutes'"
    assert out[1] == "unit converter <- 'convert 3 km'"
    assert re.fullmatch(r"generic handler for skill 'reminder-call' \(score 0\.\d\d\) <- 'remind me to call mom at 5pm'",
                        out[2])
    assert out[3] == "fallback (no skill fits) <- 'what is the capital of France'"
    assert len(out) == 4


def test_embed_router_refuses_a_registry_without_its_skills(tmp_path):
    done = subprocess.run([sys.executable, "examples/embed_router.py", "--registry", str(tmp_path / "empty"), "hi"],
                          capture_output=True, text=True, timeout=300, env=_env(tmp_path), cwd=REPO)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "the registry has no skill metric-convert, timer-call; add them: skillsoup add skills/demo/\n"


@pytest.mark.slow
def test_answer_with_skills_answers_with_the_routed_skills(demo_registry, tmp_path):
    docstring = (REPO / "examples" / "answer_with_skills.py").read_text(encoding="utf-8")
    assert '--skills skills/demo "set a timer for 5 minutes" "which quarter is 2024-03-12"' in docstring
    out = _run(["examples/answer_with_skills.py", "--registry", str(demo_registry), "--skills",
                str(skills_dir() / "timer-call.yaml"), "set a timer for 5 minutes", "which quarter is 2024-03-12"],
               tmp_path).stdout.splitlines()
    assert out[0] == "'set a timer for 5 minutes' -> 'timer(minutes=5)'"
    assert out[1].startswith("    skills: timer-call 1.00; route ")
    assert out[2] == "'which quarter is 2024-03-12' -> 'Q1 2024'"
    assert out[3].startswith("    skills: date-quarter ")


def test_the_compose_examples_file_is_the_documented_recipe(tmp_path):
    docs = (REPO / "docs" / "compose.md").read_text(encoding="utf-8")
    (recipe,) = re.findall(r'^python -c "\n(.*?)"$', docs, flags=re.S | re.M)
    assert "corpus.sample_pairs('upper-case', 24, 'heldout', seed=1)" in recipe
    (tmp_path / "examples").mkdir()
    done = subprocess.run([sys.executable, "-c", recipe], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert done.returncode == 0, done.stderr
    shipped = (REPO / "examples" / "blend.jsonl").read_text(encoding="utf-8")
    assert (tmp_path / "examples" / "blend.jsonl").read_text(encoding="utf-8") == shipped
    rows = [json.loads(line) for line in shipped.splitlines()]
    assert len(rows) == 32 and rows[0] == {"input": "capitalize old candle", "output": "OLD CANDLE"}
    assert corpus.sample_pairs("date-us", 8, "heldout", seed=2)[-1].output == rows[-1]["output"]


def test_the_tour_names_files_that_exist():
    tour = README[README.index("## A 5-minute tour"):README.index("From Python")]
    assert "--examples examples/blend.jsonl" in tour
    for path in re.findall(r"\b((?:skills|examples)/[\w./-]+)", tour):
        assert (REPO / path).exists(), path


def test_the_readme_lists_the_phrasings_the_demo_model_was_trained_on():
    """The README's "Try these phrasings" table says exactly what the corpus trains (change both)."""
    import inspect

    from skillsoup.demo import data
    from skillsoup.demo.catalog import INTENTS, VARIANTS

    section = README[README.index("| skill | phrasings it was trained on |"):]
    rows = {}
    for line in section.splitlines()[2:]:
        if not line.startswith("| "):
            break
        skill, phrasings = line.strip("| ").split(" | ", 1)
        rows[skill] = [p for p in re.findall(r"`([^`]*\{[^`]*)`", phrasings) if p != "{x}"]  # not the notes
    intent_of = {v.name: v.intent for v in VARIANTS if v.bundled}
    assert set(rows) == set(intent_of)
    generators = inspect.getsource(data)
    for skill, phrasings in rows.items():
        forms = next(i.forms for i in INTENTS if i.name == intent_of[skill])
        if forms == ("{x}",):  # the whole request is generated: its phrasings live in skillsoup/demo/data.py
            assert phrasings and all(f'"{p}"' in generators for p in phrasings), skill
        else:
            assert tuple(phrasings) == forms, skill
