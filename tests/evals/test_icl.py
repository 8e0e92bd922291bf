"""skillsoup.evals.icl and ``skillsoup eval icl``: a stored state scores like the k-shot prompt it
splits in two, the NLL is the log-softmax sum it claims, mixing one set is the stored state, and
bad input is one red line."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from helpers import assert_close, build_checkpoint

from skillsoup.evals.cases import Case, make_case, score_cases, score_cases_ref
from skillsoup.evals.icl import (
    ICLEvalError,
    capture_demos,
    evaluate,
    mean_mix_state,
    parse_ks,
    parse_methods,
    prepare_skills,
    router_picker,
    split_sets,
)
from skillsoup.skills.loader import dump_skill_yaml
from skillsoup.skills.skill import Demonstration, Skill

WORDS = ["cat", "dog", "sun", "map", "red", "owl", "fig", "jam", "kit", "log", "net", "pot"]


def word_skill(name: str = "upper", n_demos: int = 6, n_tests: int = 3, tests: bool = True) -> Skill:
    pairs = [Demonstration(w, w.upper()) for w in WORDS]
    return Skill(name, f"the {name} skill", tuple(pairs[:n_demos]),
                 tests=tuple(pairs[n_demos:n_demos + n_tests]) if tests else ())


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def one_layer_model(tmp_path_factory):
    from skillsoup import load_model

    return load_model(build_checkpoint(tmp_path_factory.mktemp("icl-1layer"), "mamba", num_hidden_layers=1))


# ---- the scorer -------------------------------------------------------------------------------
def test_batched_scorer_equals_generate_and_full_forward(model):
    """score_cases (length groups, batched decode, NLL continued from the prefill) == score_cases_ref
    (StateModel.generate per row, one forward over prompt + target), with and without a start state."""
    skill = word_skill()
    state = capture_demos(model, skill, skill.demonstrations[:3])
    cases = [make_case(model, skill, t.input, t.output, k, None) for t, k in zip(skill.tests, (0, 2, 3))]
    cases += [make_case(model, skill, t.input, t.output, 0, state) for t in skill.tests]
    cases.append(Case(cases[0].ids, cases[0].target[:1], ["\n"], state))  # one-token target
    fast, ref = score_cases(model, cases, max_new_tokens=6), score_cases_ref(model, cases, max_new_tokens=6)
    assert [r.answer for r in fast] == [r.answer for r in ref]
    assert_close("nll", torch.tensor([r.nll for r in fast]), torch.tensor([r.nll for r in ref]), 1e-5)
    assert all(r.nll > 0 for r in fast)


def test_nll_is_the_log_softmax_sum_of_the_expected_output(tiny_model):
    """Against the Hugging Face model's own logits over prompt + target (no skillsoup forward)."""
    skill = word_skill()
    t = skill.tests[0]
    case = make_case(tiny_model, skill, t.input, t.output, demos_k=2)
    # the label's space, the output and the template's end (the tiny tokenizer reads "\n" as <unk>)
    assert case.target == tiny_model.encode(" " + t.output + "\n") and len(case.target) == len(t.output) + 2
    ids = torch.tensor([case.ids + case.target])
    with torch.no_grad():
        logp = torch.log_softmax(tiny_model.hf(ids).logits[0].double(), -1)
    expected = -sum(float(logp[len(case.ids) - 1 + j, tok]) for j, tok in enumerate(case.target)) / len(case.target)
    got = score_cases(tiny_model, [case], max_new_tokens=2)[0]
    assert got.n_target == len(case.target)
    assert abs(got.nll - expected) < 1e-4 * expected


# ---- methods ------------------------------------------------------------------------------------
def test_stored_state_scores_like_the_k_shot_prompt(model):
    report = evaluate(model, [word_skill()], [0, 2, 5], ["zero-shot", "prompt", "state"], max_new_tokens=6)
    skill = report.skills[0]
    assert [(s.method, s.k) for s in skill.scores] == [
        ("zero-shot", 0), ("prompt", 2), ("state", 2), ("prompt", 5), ("state", 5)]
    zero = skill.score("zero-shot").nll
    for k in (2, 5):
        state, prompt = skill.score("state", k), skill.score("prompt", k)
        assert state.agree_with_prompt == 1.0 and state.accuracy == prompt.accuracy
        # a random model barely reads its demonstrations: measure the gap against what they change
        effect = abs(prompt.nll - zero)
        assert effect > 1e-6 and abs(state.nll_gap) < 0.05 * effect


def test_mean_mix_of_one_set_is_the_stored_state(tiny_model):
    skill = word_skill()
    assert_close("ssm", torch.cat([s.flatten() for s in mean_mix_state(tiny_model, skill, 4, mix_sets=1).ssm]),
                 torch.cat([s.flatten() for s in capture_demos(tiny_model, skill, skill.demonstrations[:4]).ssm]), 1e-6)
    report = evaluate(tiny_model, [skill], [4], ["state", "mean-mix"], mix_sets=1, max_new_tokens=6)
    state, mixed = report.skills[0].score("state", 4), report.skills[0].score("mean-mix", 4)
    assert mixed.accuracy == state.accuracy and abs(mixed.nll - state.nll) < 1e-5 * state.nll
    from skillsoup.states import relative_state_error

    two = mean_mix_state(tiny_model, skill, 4, mix_sets=2)  # two half-sets are a different state
    assert relative_state_error(two, capture_demos(tiny_model, skill, skill.demonstrations[:4])) > 1e-2


def test_split_sets_are_disjoint_and_cover():
    for n, parts in [(1, 2), (4, 2), (7, 3), (8, 4), (3, 5)]:
        sets = split_sets(n, parts)
        assert len(sets) == min(n, parts)
        assert [i for r in sets for i in r] == list(range(n))
        assert max(len(r) for r in sets) - min(len(r) for r in sets) <= 1


def test_decay_mix_is_one_pass_for_one_layer_and_reports_its_error(one_layer_model, tiny_model):
    skill = word_skill()
    one = evaluate(one_layer_model, [skill], [3], ["prompt", "decay-mix"], max_new_tokens=6)
    decay = one.skills[0].score("decay-mix", 3)
    assert decay.state_error < 1e-5 and decay.agree_with_prompt == 1.0 and abs(decay.nll_gap) < 1e-4
    deep = evaluate(tiny_model, [skill], [1, 3], ["decay-mix"], max_new_tokens=6).skills[0]
    assert deep.score("decay-mix", 1).state_error == 0.0  # one chunk is one pass
    assert deep.score("decay-mix", 3).state_error > 1e-4  # stacked layers: approximate


def test_router_method_uses_the_registry(tiny_model, tmp_path):
    from skillsoup.registry import SkillRegistry

    skills = [word_skill("upper"), Skill("echo", "repeat the word", tuple(Demonstration(w, w) for w in WORDS[:6]),
                                         tests=tuple(Demonstration(w, w) for w in WORDS[6:8]))]
    with SkillRegistry.open(tmp_path / "reg", embedder="hash:32") as reg:
        reg.add(skills, tiny_model)
        report = evaluate(tiny_model, skills, [0], ["zero-shot", "router"], picker=router_picker(reg, tiny_model),
                          max_new_tokens=4)
    assert not report.notes
    for skill in report.skills:
        routed = skill.score("router")
        assert routed.k == 6 and routed.n == skill.n_tests and 0.0 <= routed.routed_to_skill <= 1.0
    skipped = evaluate(tiny_model, skills[:1], [0], ["zero-shot", "router"], max_new_tokens=4)
    assert skipped.skills[0].score("router") is None and "router skipped" in skipped.notes[0]


# ---- input --------------------------------------------------------------------------------------
def test_inputs_are_checked():
    assert parse_ks(" 8,0,1,1 ") == [0, 1, 8]
    assert parse_methods("state,prompt") == ["prompt", "state"] and len(parse_methods("all")) == 6
    for bad in ("1,x", "", "-1"):
        with pytest.raises(ICLEvalError):
            parse_ks(bad)
    with pytest.raises(ICLEvalError, match="choose from"):
        parse_methods("state,magic")
    with pytest.raises(ICLEvalError, match="--split"):
        prepare_skills([word_skill(tests=False)])
    with pytest.raises(ICLEvalError, match="between 0 and 1"):
        prepare_skills([word_skill(tests=False)], split=1.5)


def test_split_and_n_tests(tiny_model):
    (skill, source), = prepare_skills([word_skill(n_demos=8, tests=False)], split=0.25, seed=3)
    assert source == "split" and len(skill.demonstrations) == 6 and len(skill.tests) == 2
    assert set(skill.demonstrations) | set(skill.tests) == set(word_skill(n_demos=8).demonstrations)
    (fewer, _), = prepare_skills([word_skill(n_tests=5)], n_tests=2)
    assert len(fewer.tests) == 2 and set(fewer.tests) <= set(word_skill(n_tests=5).tests)
    report = evaluate(tiny_model, [word_skill(n_demos=3)], None, ["prompt"], max_new_tokens=2)
    assert report.skills[0].ks == [0, 1, 3]  # default 0,1,4,8,32 capped at 3 demonstrations
    with pytest.raises(ICLEvalError, match="has 3 demonstrations"):
        evaluate(tiny_model, [word_skill(n_demos=3)], [4], ["prompt"])


# ---- the command --------------------------------------------------------------------------------
@pytest.fixture
def cli(capsys, monkeypatch):
    from skillsoup.cli import main

    monkeypatch.setenv("SKILLSOUP_EMBEDDER", "hash:32")

    def run(*args):
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        assert "Traceback" not in out + err
        return code, out, err

    return run


def _write(folder, *skills):
    folder.mkdir(parents=True, exist_ok=True)
    for s in skills:
        (folder / f"{s.name}.yaml").write_text(dump_skill_yaml(s), encoding="utf-8")
    return folder


def test_cli_json_schema_and_plot(cli, tmp_path, mamba_dir):
    files = _write(tmp_path / "skills", word_skill("upper", n_demos=4), word_skill("shout", n_demos=4, n_tests=2))
    png = tmp_path / "icl.png"
    code, out, err = cli("eval", "icl", files, "--model", mamba_dir, "--k", "0,2", "--json", "-", "--plot", png,
                         "--max-tokens", "4", "--methods", "zero-shot,prompt,state,mean-mix")
    assert code == 0, err
    data = json.loads(out)
    assert set(data) == {"model", "methods", "ks", "settings", "seconds", "notes", "mean", "skills"}
    assert data["ks"] == [0, 2] and [s["name"] for s in data["skills"]] == ["shout", "upper"]
    score_keys = {"method", "k", "accuracy", "nll", "n", "agree_with_prompt", "nll_gap", "state_error", "routed_to_skill"}
    assert all(set(s) == score_keys for s in data["mean"])
    skill = data["skills"][1]
    assert {"name", "n_demos", "n_tests", "tests_from", "ks", "scores", "examples"} <= set(skill)
    assert skill["n_tests"] == 3 and skill["tests_from"] == "tests"
    state = next(s for s in data["mean"] if s["method"] == "state" and s["k"] == 2)
    assert state["agree_with_prompt"] == 1.0 and state["n"] == 5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = cli("eval", "icl", files / "upper.yaml", "--model", mamba_dir, "--k", "1", "--max-tokens", "2",
                "--methods", "prompt,state", "--markdown")
    assert table[0] == 0 and "| upper |" in table[1] and "state k=1 == 1-shot prompt" in table[1]


def test_cli_router_routes_among_the_evaluated_skills_by_default(cli, tmp_path, mamba_dir):
    """Without --registry the router method routes in a temporary registry of the skills evaluated."""
    files = _write(tmp_path / "skills", word_skill("upper", n_demos=4), word_skill("shout", n_demos=4, n_tests=2))
    code, out, err = cli("eval", "icl", files, "--model", mamba_dir, "--k", "1", "--json", "-",
                         "--max-tokens", "2", "--methods", "router")
    assert code == 0, err
    data = json.loads(out)
    assert data["settings"]["router"] == "text" and data["settings"]["registry"] == "the evaluated skills"
    routed = [s["scores"][0] for s in data["skills"]]
    assert [r["method"] for r in routed] == ["router", "router"] and all(r["n"] > 0 for r in routed)
    assert all(0.0 <= r["routed_to_skill"] <= 1.0 for r in routed) and not data["notes"]


@pytest.mark.parametrize("args, message", [
    (["missing.yaml"], "no such file"),
    (["{files}/upper.yaml", "--k", "1,x"], "--k"),
    (["{files}/upper.yaml", "--k", "40"], "has 4 demonstrations"),
    (["{files}/notests.yaml"], "--split"),
    (["{files}/notests.yaml", "--split", "2"], "between 0 and 1"),
    (["{files}/upper.yaml", "--methods", "magic"], "choose from"),
    (["{files}/upper.yaml", "--plot", "out.jpg"], ".png"),
])
def test_cli_errors_are_one_red_line(cli, tmp_path, mamba_dir, args, message):
    files = _write(tmp_path / "skills", word_skill("upper", n_demos=4), word_skill("notests", tests=False))
    code, out, err = cli("eval", "icl", *[a.format(files=files) for a in args], "--model", mamba_dir)
    assert code == 1 and message in err and err.count("\n") == 1 and err.startswith("error:")


def test_cli_plot_without_matplotlib_says_how_to_install(cli, tmp_path, mamba_dir, monkeypatch):
    files = _write(tmp_path / "skills", word_skill("upper", n_demos=4))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    code, out, err = cli("eval", "icl", files, "--model", mamba_dir, "--plot", tmp_path / "x.png")
    assert code == 1 and "pip install matplotlib" in err and not (tmp_path / "x.png").exists()


# ---- the shipped demo model ---------------------------------------------------------------------
def test_demo_model_state_equals_k_shot_prompt():
    """Structure only (the demo model may be retrained): on one skill per family, the stored state's
    answers and NLL are the k-shot prompt's; never an accuracy number."""
    from skillsoup import load_model
    from skillsoup.demo import DEMO_MODEL_DIR, corpus

    model = load_model(DEMO_MODEL_DIR)
    names = [names[0] for names in corpus.FAMILIES.values()][:4]
    skills = [corpus.skill_object(name, 4, "demo", 0, 3) for name in names]
    report = evaluate(model, skills, [0, 4], ["zero-shot", "prompt", "state"], max_new_tokens=32)
    for skill in report.skills:
        state = skill.score("state", 4)
        assert state.agree_with_prompt == 1.0, skill.name
        assert abs(state.nll_gap) < 1e-4 * max(skill.score("prompt", 4).nll, 1e-3), skill.name


def test_hybrid_model_state_scores_like_the_prompt_and_skips_decay_mix(hybrid_model):
    """A hybrid (Jamba: attention KV in the state) runs eval icl unchanged: the injected state is
    the k-shot prompt split in two, and decay-mix, which needs a recurrent-only model, is skipped."""
    skill = word_skill(n_demos=4, n_tests=2)
    report = evaluate(hybrid_model, [skill], ks=[2], methods=["prompt", "state", "mean-mix", "decay-mix"],
                      max_new_tokens=4)
    assert "decay-mix" not in report.methods and any("decay-mix skipped" in n for n in report.notes)
    state = next(s for s in report.skills[0].scores if s.method == "state")
    assert state.agree_with_prompt == 1.0 and abs(state.nll_gap) < 1e-4
