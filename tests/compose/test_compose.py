"""skillsoup compose: the CMA-ES search, the NLL objective (batched vs reference), weights found on
the demo model that beat the uniform mix on held-out examples, composite skills in the registry
(recipe, remix, doctor, removed/changed sources) and the command (typer's CliRunner around main)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import assert_close

from skillsoup.compose import (
    compose,
    compose_skill,
    example_nll,
    load_examples,
    simplex_weights,
)
from skillsoup.compose.search import cma_es
from skillsoup.demo import DEMO_MODEL_DIR, corpus
from skillsoup.errors import MixError, RegistryError, SkillFileError, SkillNotFoundError, StateMismatchError
from skillsoup.skills.skill import DEFAULT_TEMPLATE


def blend_pair() -> tuple[str, str]:
    """Two demo skills of different families with the default template: a task whose inputs are
    mostly A's kind and partly B's needs both, in unequal amounts (so uniform is not the optimum)."""
    plain = [s for s in corpus.SKILLS if s.template == DEFAULT_TEMPLATE]
    a = plain[0]
    b = next(s for s in plain if s.family != a.family)
    return a.name, b.name


def blend_examples(a: str, b: str, n_a: int = 24, n_b: int = 8):
    """Mostly A, some B; from the held-out split, never the skills' demonstrations."""
    return corpus.sample_pairs(a, n_a, "heldout", seed=1) + corpus.sample_pairs(b, n_b, "heldout", seed=2)


def write_jsonl(path, pairs) -> None:
    path.write_text("".join(json.dumps({"input": p.input, "output": p.output}) + "\n" for p in pairs), encoding="utf-8")


# ---- the search --------------------------------------------------------------------------------
def test_cma_es_finds_the_optimum_on_the_simplex():
    target = np.array([0.6, 0.3, 0.1])
    found = cma_es(lambda z: float(np.sum((np.array(simplex_weights(z)) - target) ** 2)), dim=2, budget=200, seed=3)
    np.testing.assert_allclose(simplex_weights(found.best_x), target, atol=1e-2)
    assert len(found.trace) <= 200 and found.trace[0].x == (0.0, 0.0)  # the uniform mix is evaluated first


def test_cma_es_one_dimension_and_budget():
    found = cma_es(lambda x: float((x[0] - 1.7) ** 2), dim=1, budget=60, seed=0)
    assert abs(found.best_x[0] - 1.7) < 1e-2
    short = cma_es(lambda x: float((x[0] - 1.7) ** 2), dim=1, budget=7, seed=0)
    assert len(short.trace) == 7 and short.best_value == min(s.value for s in short.trace)


def test_cma_es_is_deterministic_for_a_seed():
    f = lambda z: float(np.sum((z - np.array([0.5, -1.0, 2.0])) ** 2) + np.sin(3 * z).sum())  # noqa: E731
    first, again, other = (cma_es(f, dim=3, budget=50, seed=s) for s in (7, 7, 8))
    assert first.trace == again.trace
    assert first.trace[1:] != other.trace[1:]


def test_simplex_weights():
    assert simplex_weights([0.0, 0.0, 0.0]) == pytest.approx((0.25,) * 4)
    w = simplex_weights([3.0, -2.0])
    assert sum(w) == pytest.approx(1.0) and min(w) > 0 and w[1] > w[0] > w[2]


# ---- the objective -----------------------------------------------------------------------------
def _example_nll_ref(model, state, skill, examples) -> float:
    """One example at a time, one forward over query + answer: what example_nll batches."""
    from skillsoup.compose.weights import encode_examples
    from skillsoup.models.scoring import forced_nll_ref

    encoded = encode_examples(model, skill, examples)
    return float(np.mean(forced_nll_ref(model, [q for q, _ in encoded], [a for _, a in encoded], [state] * len(encoded))))


def test_batched_nll_matches_reference(demo_model):
    from skillsoup.registry import capture_skill

    a, b = blend_pair()
    skill = corpus.skill_object(a)
    state = capture_skill(demo_model, skill)
    examples = blend_examples(a, b, 5, 3)  # different lengths: grouping by length is exercised
    fast = example_nll(demo_model, state, skill, examples)
    ref = _example_nll_ref(demo_model, state, skill, examples)
    assert_close("nll", torch.tensor([fast]), torch.tensor([ref]), 1e-4)
    wrong = [type(e)(e.input, e.output[::-1] + "x") for e in examples]
    assert example_nll(demo_model, state, skill, wrong) > fast  # it scores the outputs, not just the queries


def test_batched_nll_matches_reference_both_archs(model):
    """Tiny random Mamba-1 and Mamba-2 (char tokenizer): padding and batching change nothing."""
    from skillsoup.skills.skill import Demonstration, Skill

    skill = Skill("t", "t", (Demonstration("ab", "c"),), template="Q: {input}\nA: {output}\n")
    examples = [Demonstration("x" * n, "y" * (5 - n)) for n in range(1, 5)]
    state = model.capture(model.encode(skill.render_demonstrations()))
    fast = example_nll(model, state, skill, examples)
    assert_close("nll", torch.tensor([fast]), torch.tensor([_example_nll_ref(model, state, skill, examples)]), 1e-4)


def test_compose_beats_uniform_on_held_out_examples(demo_model):
    """The demo-model test of the brief: weights searched on half of a 3:1 blend of two skills beat
    the uniform mix on the other half."""
    from skillsoup.registry import capture_skill

    a, b = blend_pair()
    states = {n: capture_skill(demo_model, corpus.skill_object(n)) for n in (a, b)}
    result = compose(demo_model, states, blend_examples(a, b), corpus.skill_object(a), budget=17, seed=0, holdout=0.5)
    assert result.n_search == 16 and result.n_holdout == 16 and result.evaluations <= 17
    assert sum(result.weights) == pytest.approx(1.0) and result.trace[0].weights == (0.5, 0.5)
    assert result.best_nll == min(s.nll for s in result.trace) <= result.uniform_nll
    assert result.best_holdout_nll < result.uniform_holdout_nll
    again = compose(demo_model, states, blend_examples(a, b, 3, 1), corpus.skill_object(a), budget=5, seed=4)
    twice = compose(demo_model, states, blend_examples(a, b, 3, 1), corpus.skill_object(a), budget=5, seed=4)
    assert again.weights == twice.weights and again.trace == twice.trace


def test_compose_rejects_bad_input(demo_model, tiny_model):
    from skillsoup.registry import capture_skill

    a, b = blend_pair()
    skill = corpus.skill_object(a)
    sa, sb = capture_skill(demo_model, skill), capture_skill(demo_model, corpus.skill_object(b))
    examples = blend_examples(a, b, 3, 1)
    with pytest.raises(MixError, match="at least 2 source"):
        compose(demo_model, {a: sa}, examples, skill)
    with pytest.raises(StateMismatchError):
        compose(demo_model, {a: sa, "tiny": tiny_model.empty_state()}, examples, skill)
    for bad in ({"budget": 0}, {"budget": 2.5}, {"holdout": 1.0}, {"conv": "max"}):
        with pytest.raises(MixError):
            compose(demo_model, {a: sa, b: sb}, examples, skill, **bad)


def test_load_examples(tmp_path):
    path = tmp_path / "ex.jsonl"
    path.write_text('{"input": "a b", "output": "A B"}\n\n{"output": "C", "input": "c"}\n', encoding="utf-8")
    assert [(e.input, e.output) for e in load_examples(path)] == [("a b", "A B"), ("c", "C")]
    cases = {
        "": "no examples found",
        '{"input": "a", "output": "b"}\n{"input": "a"\n': ":2:",
        '{"input": "a"}\n': "no 'output'",
        '{"input": "a", "output": "b", "skil": "x"}\n': "unknown key 'skil'",
        '["a", "b"]\n': "not a JSON object",
        '{"input": "a", "output": 3}\n': "must be text",
    }
    for text, message in cases.items():
        path.write_text(text, encoding="utf-8")
        with pytest.raises(SkillFileError, match=message):
            load_examples(path)
    with pytest.raises(SkillFileError, match="does not exist"):
        load_examples(tmp_path / "missing.jsonl")


# ---- composites in the registry ------------------------------------------------------------------
@pytest.fixture
def reg_with_sources(tmp_path, demo_model):
    from skillsoup.registry import SkillRegistry

    a, b = blend_pair()
    reg = SkillRegistry.open(tmp_path / "reg", embedder="hash:32")
    reg.add([corpus.skill_object(a), corpus.skill_object(b)], demo_model)
    yield reg, a, b
    reg.close()


def _recipe(reg, names, weights, model):
    from skillsoup.registry.composite import Recipe, RecipePart

    parts = tuple(RecipePart(n, reg.info(n).content_hash, reg.info(n).state_hash, w) for n, w in zip(names, weights))
    return Recipe(parts=parts, conv="mix", method="test", model=model.fingerprint, n_examples=4)


def _composite_skill(name, a, b):
    from skillsoup.skills.skill import Skill

    return Skill(name, "mostly capitals, some dates", tuple(blend_examples(a, b, 3, 1)), tags=("composite",))


def test_composite_row_state_and_remix(reg_with_sources, demo_model):
    from skillsoup.states.mixing import mix

    reg, a, b = reg_with_sources
    recipe = _recipe(reg, [a, b], [0.8, 0.2], demo_model)
    added = reg.add_composite(_composite_skill("blend", a, b), recipe, demo_model)
    assert added.status == "added" and "blend" in reg
    expected = mix([reg.state(a, demo_model), reg.state(b, demo_model)], [0.8, 0.2])
    stored = reg.state("blend", demo_model, recompute=False)
    assert_close("composite ssm", stored.ssm[-1], expected.ssm[-1], 1e-6)
    info = reg.info("blend")
    assert info.state_hash == recipe.state_hash != _composite_skill("blend", a, b).state_hash
    assert [(p["name"], p["weight"]) for p in info.recipe["parts"]] == [(a, 0.8), (b, 0.2)]
    assert reg.recipe("blend") == (recipe, []) and reg.recipe(a) is None
    assert reg.query_skills(reg.embed_texts(["blend: mostly capitals, some dates"])[0], 1)[0].skill == "blend"

    reg.store.path(recipe.state_hash, demo_model.fingerprint).unlink()  # the re-capture path re-mixes
    assert reg.doctor(demo_model).counts() == {"missing state file": 1}
    assert reg.doctor(demo_model, repair=False).clean
    assert_close("remixed ssm", reg.state("blend", demo_model, recompute=False).ssm[-1], expected.ssm[-1], 1e-6)
    assert [r.status for r in reg.rebuild(demo_model)] == ["rebuilt"] * 3

    with pytest.raises(RegistryError, match="--replace"):
        reg.add_composite(_composite_skill("blend", a, b), recipe, demo_model)
    other = _recipe(reg, [a, b], [0.3, 0.7], demo_model)
    assert reg.add_composite(_composite_skill("blend", a, b), other, demo_model, replace=True).status == "replaced"
    assert reg.doctor(demo_model, repair=False).clean  # the old mix's state file went with it
    assert [r.status for r in reg.add([_composite_skill("blend", a, b)], demo_model, replace=True)] == ["replaced"]
    assert reg.recipe("blend") is None and reg.doctor(demo_model, repair=False).clean  # a plain skill again


def test_composite_is_remixed_for_another_model(reg_with_sources, demo_model, tiny_model, caplog):
    from skillsoup.states.mixing import mix

    reg, a, b = reg_with_sources
    reg.add_composite(_composite_skill("blend", a, b), _recipe(reg, [a, b], [0.7, 0.3], demo_model), demo_model)
    state = reg.state("blend", tiny_model)  # no mix for this model yet: the sources' states, re-mixed
    expected = mix([reg.state(a, tiny_model), reg.state(b, tiny_model)], [0.7, 0.3])
    assert state.fingerprint == tiny_model.fingerprint
    assert_close("remixed for tiny", state.ssm[0], expected.ssm[0], 1e-6)
    assert "weights were searched with model" in caplog.text
    assert sorted(reg.info("blend").models) == sorted([demo_model.fingerprint, tiny_model.fingerprint])


def test_removed_or_changed_source_is_reported_not_fatal(reg_with_sources, demo_model, capsys):
    reg, a, b = reg_with_sources
    recipe = _recipe(reg, [a, b], [0.6, 0.4], demo_model)
    reg.add_composite(_composite_skill("blend", a, b), recipe, demo_model)
    changed = corpus.skill_object(b, n_demos=5)
    reg.add([changed], demo_model, replace=True)
    assert reg.recipe("blend")[1] == [f"{b} (changed)"]
    assert reg.remove(a) == ["blend"]
    report = reg.doctor(demo_model, repair=True)
    assert sorted(p.kind for p in report.unfixable) == ["composite source changed", "composite source removed"]
    assert reg.state("blend", demo_model).num_layers == demo_model.num_layers  # the stored mix still serves
    assert [r.status for r in reg.rebuild(demo_model) if r.name == "blend"] == [f"kept: source {a} (removed), source {b} (changed)"]
    assert [i.name for i in reg.list()] == ["blend", b]

    reg.store.path(recipe.state_hash, demo_model.fingerprint).unlink()
    with pytest.raises(RegistryError, match="cannot be remixed"):
        reg.state("blend", demo_model)
    reg.index.skills.update(ids=["blend"], metadatas=[{"recipe": "{not json"}])
    assert "error" in reg.info("blend").recipe
    assert "unreadable recipe" in reg.doctor(demo_model, repair=False).counts()


def test_compose_skill_saves_the_search(reg_with_sources, demo_model):
    reg, a, b = reg_with_sources
    examples = blend_examples(a, b, 6, 2)
    result, added = compose_skill(reg, demo_model, "blend", [a, b], examples, budget=6, holdout=0.25)
    recipe, broken = reg.recipe("blend")
    assert added.status == "added" and not broken
    assert recipe.weights == list(result.weights) and recipe.nll_best == result.best_nll and recipe.n_holdout == 2
    skill = reg.get("blend")
    assert len(skill.demonstrations) == 6 and len(skill.tests) == 2 and skill.template == corpus.skill_object(a).template
    with pytest.raises(SkillNotFoundError):
        compose_skill(reg, demo_model, "blend2", [a, "no-such-skill"], examples)
    with pytest.raises(MixError, match="at least 2"):
        compose_skill(reg, demo_model, "blend2", [a], examples)
    with pytest.raises(MixError, match="exactly once"):
        compose_skill(reg, demo_model, "blend2", [a, b], examples, template="no placeholders")


# ---- the command (the cli fixture: conftest.py) -------------------------------------------------
def test_compose_command(cli, tmp_path):
    from skillsoup.skills.loader import dump_skill_yaml

    a, b = blend_pair()
    files = tmp_path / "skills"
    files.mkdir()
    for n in (a, b):
        (files / f"{n}.yaml").write_text(dump_skill_yaml(corpus.skill_object(n)), encoding="utf-8")
    assert cli("add", files, "--model", DEMO_MODEL_DIR)[0] == 0
    examples = tmp_path / "blend.jsonl"
    write_jsonl(examples, blend_examples(a, b, 6, 2))
    code, out, err = cli("compose", "blend", "--from", f"{a},{b}", "--examples", examples, "--budget", 6,
                         "--holdout", 0.25, "--model", DEMO_MODEL_DIR)
    assert code == 0, err
    assert "uniform" in out and "found" in out and "held out" in out and "added composite skill blend" in out
    code, out, _ = cli("skills", "show", "blend")
    assert code == 0 and "composite of" in out and f"{a} " in out and f"{b} " in out and out.count("weight ") == 2
    from skillsoup.registry import SkillRegistry

    with SkillRegistry.open(embedder="hash:32") as reg:
        query = reg.get("blend").demonstrations[0].input
    code, out, _ = cli("route", query, "--model", DEMO_MODEL_DIR)
    assert code == 0 and "blend" in out  # routable like any skill
    code, out, _ = cli("skills", "list")
    assert code == 0 and "(mix of 2)" in out
    code, out, _ = cli("skills", "remove", a)
    assert code == 0 and "source of composite skill blend: it keeps its stored mix" in " ".join(out.split())
    code, out, _ = cli("skills", "show", "blend")
    assert code == 0 and "removed since composed" in out
    code, out, err = cli("doctor", "--model", DEMO_MODEL_DIR)
    assert code != 0 and "composite source removed" in out and err.count("\n") == 1


@pytest.mark.parametrize("case", ["unknown skill", "one source", "empty examples", "malformed examples", "bad holdout",
                                  "name taken"])
def test_compose_command_bad_input(cli, tmp_path, case):
    a, b = blend_pair()
    if case in ("unknown skill", "name taken"):
        from skillsoup.skills.loader import dump_skill_yaml

        (tmp_path / "a.yaml").write_text(dump_skill_yaml(corpus.skill_object(a)), encoding="utf-8")
        assert cli("add", tmp_path / "a.yaml", "--model", DEMO_MODEL_DIR)[0] == 0
    examples = tmp_path / "ex.jsonl"
    write_jsonl(examples, blend_examples(a, b, 2, 1))
    args = {"from": f"{a},{b}", "examples": examples, "holdout": 0.0, "name": "blend"}
    if case == "one source":
        args["from"] = a
    elif case == "empty examples":
        examples.write_text("\n", encoding="utf-8")
    elif case == "malformed examples":
        examples.write_text('{"input": "x", "output": "y"}\n{"input": \n', encoding="utf-8")
    elif case == "bad holdout":
        args["holdout"] = 1.5
    elif case == "name taken":
        args["name"] = a
    code, out, err = cli("compose", args["name"], "--from", args["from"], "--examples", args["examples"],
                         "--holdout", args["holdout"], "--budget", 3, "--model", DEMO_MODEL_DIR)
    assert code != 0 and err.startswith("error:") and err.count("\n") == 1, (code, out, err)
