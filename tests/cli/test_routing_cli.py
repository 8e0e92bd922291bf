"""``skillsoup route``, ``ask``, ``fit`` and ``eval routing``: output, JSON schemas, and bad input
as one red line with exit code 1 and no traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "routing"))  # synthetic

from synthetic import make_labelled, make_skills, write_jsonl  # noqa: E402

from skillsoup.routing.metrics import KEYS  # noqa: E402
from skillsoup.skills.loader import dump_skill_yaml  # noqa: E402

QUERY = "please set the alarm countdown for ten minutes"


@pytest.fixture
def reg(cli, tmp_path, mamba_dir):
    """Registry option of a registry holding the synthetic skills."""
    folder = tmp_path / "skills"
    folder.mkdir()
    for skill in make_skills():
        (folder / f"{skill.name}.yaml").write_text(dump_skill_yaml(skill), encoding="utf-8")
    option = ["--registry", tmp_path / "reg"]
    assert cli("add", folder, "--model", mamba_dir, *option).code == 0
    return option


def test_route_and_ask_print_tiny_weights_honestly(cli, reg, mamba_dir):
    """A weight that rounds to 0.00 prints as <0.01 (a zero weight is not listed at all: routing
    drops it, tests/routing/test_route_finish.py)."""
    from skillsoup.registry import SkillRegistry
    from skillsoup.routing import Router, weight_text

    with SkillRegistry.open(reg[1]) as registry:  # the first softmax temperature that gives a weight < 0.005
        for t in (0.3, 0.1, 0.03, 0.01, 0.003):
            registry.set_setting("router", {"threshold": -1.0, "top_k": 8, "temperature": t})
            matches = Router(registry).route(QUERY)
            if any(m.weight < 0.005 for m in matches):
                break
    assert any(0 < m.weight < 0.005 for m in matches) and all(m.weight > 0 for m in matches)
    r = cli("route", QUERY, *reg)
    assert r.code == 0 and "<0.01" in r.out and "0.00 " not in r.out
    rows = [line for line in r.out.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].split()[0] for row in rows] == [m.name for m in matches]
    assert [row.split("│")[3].strip() for row in rows] == [weight_text(m.weight) for m in matches]
    a = cli("ask", QUERY, "--max-tokens", "1", "--model", mamba_dir, *reg)
    assert a.code == 0 and ", ".join(f"{m.name} {weight_text(m.weight)}" for m in matches) in a.err


def _one_red_line(run, *needles) -> None:
    assert run.code == 1, run
    lines = run.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), run.err
    for needle in needles:
        assert needle in lines[0], run.err


def test_route_table_json_and_no_skill(cli, reg):
    r = cli("route", QUERY, *reg)
    assert r.code == 0 and "timer" in r.out and "weight" in r.out and "policy max" in r.err
    data = json.loads(cli("route", QUERY, "--json", "--top-k", "2", *reg).out)
    assert set(data) == {"query", "router", "policy", "matches", "route_ms", "fit"}
    assert data["fit"]["fitted"] is False and data["fit"]["n"] is None
    assert data["matches"][0]["name"] == "timer" and len(data["matches"]) <= 2
    assert set(data["matches"][0]) == {"name", "score", "weight", "folded"}
    assert abs(sum(m["weight"] for m in data["matches"]) - 1) < 1e-9
    from skillsoup.registry import SkillRegistry

    with SkillRegistry.open(reg[1]) as registry:  # a strict stored threshold: nothing passes
        registry.set_setting("router", {"threshold": 0.99})
    r = cli("route", QUERY, *reg)
    assert r.code == 0 and "no skill" in r.out
    assert json.loads(cli("route", QUERY, "--json", *reg).out)["matches"] == []


def test_route_by_state_needs_a_model(cli, reg, mamba_dir):
    _one_red_line(cli("route", QUERY, "--router", "state", *reg), "no default model", "--model")
    r = cli("route", QUERY, "--router", "state", "--model", mamba_dir, "--json", *reg)
    assert r.code == 0 and json.loads(r.out)["router"] == "state" and json.loads(r.out)["matches"]
    r = cli("route", QUERY, "--router", "hybrid", "--model", mamba_dir, "--example", "alarm=>timer()", *reg)
    assert r.code == 0 and "hybrid router" in r.err
    r = cli("route", QUERY, "--router", "vector", *reg)  # a usage error: exit 2, the option named
    assert r.code == 2 and "'--router'" in r.err and "'vector' is not one of text, state, hybrid" in r.err, r
    _one_red_line(cli("route", QUERY, "--router", "state", "--model", mamba_dir, "--example", "no arrow", *reg),
                  "INPUT=>OUTPUT")


def test_ask_prints_the_answer_and_a_routing_line(cli, reg, mamba_dir):
    r = cli("ask", QUERY, "--model", mamba_dir, "-n", "4", *reg)
    assert r.code == 0 and r.out.endswith("\n")
    assert "timer" in r.err and "first token" in r.err and "tok/s" in r.err
    data = json.loads(cli("ask", QUERY, "--model", mamba_dir, "-n", "4", "--json", *reg).out)
    assert set(data) == {"text", "matches", "timings", "pinned", "stopped", "truncated"}
    assert set(data["timings"]) >= {"route_ms", "load_mix_ms", "prefill_ms", "first_token_ms", "decode_tokens_per_s"}
    pinned = json.loads(cli("ask", QUERY, "--model", mamba_dir, "-n", "2", "--json", "--skill", "math:3",
                            "--skill", "timer", "--mix", "top", *reg).out)
    assert pinned["pinned"] and [(m["name"], m["weight"]) for m in pinned["matches"]] == [("math", 0.75), ("timer", 0.25)]
    r = cli("ask", QUERY, "--model", mamba_dir, "-n", "2", "--no-route", *reg)
    assert r.code == 0 and "no skill" in r.err
    r = cli("ask", QUERY, "--model", mamba_dir, "-n", "2", "--no-route", "--device", "cpu", "--dtype", "float32", *reg)
    assert r.code == 0


@pytest.mark.parametrize(("args", "needles"), [
    (["--skill", "timer:x"], ["--skill 'timer:x'", "number > 0"]),
    (["--skill", "timer:-1"], ["number > 0"]),
    (["--skill", "nosuch"], ["unknown skill 'nosuch'"]),
    (["--skill", "timer", "--skill", "timer:2"], ["given twice"]),
    (["--device", "tpu"], ["--device must be cpu, cuda or cuda:N"]),
    (["--device", "cuda:7"] if torch.cuda.is_available() else ["--device", "cuda"], ["--device cuda"]),
])  # a mistyped --mix or --dtype is a usage error (exit 2): tests/cli/test_usage_errors.py
def test_ask_bad_options(cli, reg, mamba_dir, args, needles):
    _one_red_line(cli("ask", QUERY, "--model", mamba_dir, *args, *reg), *needles)


@pytest.mark.parametrize(("query", "needle"), [("", "empty"), ("   ", "empty"), ("x" * 1_000_000, "limit is 4,000")])
def test_bad_queries(cli, reg, mamba_dir, query, needle):
    _one_red_line(cli("route", query, *reg), needle)
    _one_red_line(cli("ask", query, "--model", mamba_dir, *reg), needle)


def test_a_fit_on_fewer_labelled_queries_than_skills_warns(cli, reg, tmp_path):
    few = write_jsonl(tmp_path / "few.jsonl", make_labelled(300, seed=1)[:2])
    r = cli("fit", few, *reg)
    assert r.code == 0 and "warning: 2 labelled queries for" in " ".join(r.err.split()), r.err


def test_fit_then_eval_routing_json(cli, reg, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", make_labelled(300, seed=1))
    test = write_jsonl(tmp_path / "test.jsonl", make_labelled(60, seed=2))
    assert "router: default parameters, not fitted" in " ".join(cli("skills", "list", *reg).out.split())
    r = cli("fit", train, *reg)
    out = " ".join(r.out.split())
    assert r.code == 0 and "chosen" in out and "baseline" in out and "classifier" in out and "settings v1" in out, r.out
    assert "warning" not in r.err
    r = cli("eval", "routing", test, "--json", "--latency-sample", "5", *reg)
    assert r.code == 0
    data = json.loads(r.out)  # one JSON object, nothing else on stdout
    for key in KEYS:
        assert key in data and key in data["baseline"]
    assert data["n"] == 60 and data["fitted"] is True and data["baseline"]["policy"] == "nn-threshold"
    assert isinstance(data["p50_ms"], float) and 0 <= data["macro_f1"] <= 1
    r = cli("eval", "routing", test, "--latency-sample", "5", *reg)
    assert r.code == 0 and "baseline: nn-threshold" in r.out and "macro_f1" in r.out
    r = cli("fit", train, "--json", "--objective", "accuracy", *reg)
    fitted = json.loads(r.out)
    assert r.code == 0 and set(fitted["routers"]) == {"unfitted", "baseline", "classifier"}
    assert fitted["chosen"] in fitted["routers"] and fitted["objective"] == "accuracy"
    for v in fitted["routers"].values():
        assert 0 <= v["in_scope_accuracy"] <= 1 and 0 <= v["abstain_recall"] <= 1
    route = json.loads(cli("route", QUERY, "--json", *reg).out)
    assert route["fit"]["fitted"] is True and route["fit"]["n"] == 300 and route["fit"]["at"]
    listed = " ".join(cli("skills", "list", *reg).out.split())
    assert f"router: fitted {route['fit']['at']} on 300 queries" in listed
    _one_red_line(cli("fit", train, "--objective", "speed", *reg), "unknown objective 'speed'")
    _one_red_line(cli("fit", train, "--objective", "accuracy@2", *reg), "accuracy@R with 0 < R < 1")
    r = cli("fit", train, "--objective", "accuracy@0.99", *reg)  # the unfitted router cannot refuse 99%
    assert r.code == 0 and "abstain < 0.99" in r.out and "accuracy@0.99" in r.out, r.out


def test_malformed_and_unknown_labels(cli, reg, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "a", "skill": null}\n{"query": oops}\n', encoding="utf-8")
    _one_red_line(cli("eval", "routing", bad, *reg), f"{bad}:2", "not valid JSON")
    _one_red_line(cli("fit", bad, *reg), f"{bad}:2")
    unknown = write_jsonl(tmp_path / "unknown.jsonl", [{"query": "q", "skill": "timer"}, {"query": "r", "skill": "nope"}])
    _one_red_line(cli("fit", unknown, *reg), f"{unknown}:2", "unknown skill 'nope'")
    _one_red_line(cli("eval", "routing", tmp_path / "missing.jsonl", *reg), "does not exist")


def test_a_mistyped_registry_is_an_error_for_commands_that_only_read(cli, tmp_path):
    typo = tmp_path / "no-such-registry"
    examples = tmp_path / "examples.jsonl"
    examples.write_text('{"input": "a", "output": "b"}\n', encoding="utf-8")
    compose = ["compose", "blend", "--from", "upper,lower", "--examples", examples]  # its sources would be in it
    for args in (["route", QUERY], ["ask", QUERY], ["skills", "list"], ["eval", "routing", tmp_path / "x.jsonl"],
                 ["fit"], ["doctor"], compose):
        _one_red_line(cli(*args, "--registry", typo), "does not exist", "--registry")
        assert not typo.exists(), args  # nothing created
