"""The stages after the model, unchanged for a hybrid (a tiny Jamba: Mamba-1 mixers, attention,
MoE): registry states, the text and state routers, SkillSoup with both KV policies, compose."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_close

import skillsoup.runtime as runtime
from skillsoup import mix
from skillsoup.errors import MixError
from skillsoup.routing.router import Router, RouterParams
from skillsoup.routing.state_features import state_vector
from skillsoup.runtime import SkillSoup

QUERY = "please set the alarm countdown for ten minutes"


@pytest.fixture(scope="module")
def _hybrid_template(tmp_path_factory, hybrid_model):
    from synthetic import make_skills

    from skillsoup.registry import SkillRegistry

    path = tmp_path_factory.mktemp("hybrid-synthetic") / "reg"
    with SkillRegistry.open(path, embedder="hash:64") as reg:
        reg.add(make_skills()[:4], hybrid_model)
    return path


@pytest.fixture
def reg(_hybrid_template, tmp_path):
    import shutil

    from skillsoup.registry import SkillRegistry

    shutil.copytree(_hybrid_template, tmp_path / "reg")
    with SkillRegistry.open(tmp_path / "reg") as registry:
        yield registry


def test_pinned_answer_equals_demonstrations_in_the_prompt(reg, hybrid_model):
    name = reg.names()[0]
    answer = SkillSoup(reg, hybrid_model).answer(QUERY, skills={name: 1.0}, max_new_tokens=10)
    skill = reg.get(name)
    prompt = [hybrid_model.tokenizer.bos_token_id] + hybrid_model.encode(
        skill.render_demonstrations() + skill.render_query(QUERY))
    expected = "".join(hybrid_model.generate(prompt, None, stop=skill.stop_strings(), max_new_tokens=10))
    assert answer.text == expected.lstrip(" \t")


@pytest.mark.parametrize("kv", ["top", "concat"])
def test_kv_policy_reaches_the_mix(reg, hybrid_model, monkeypatch, kv):
    got = []
    real = runtime.mix
    monkeypatch.setattr(runtime, "mix", lambda *a, **k: got.append((k.get("kv"), real(*a, **k))) or got[-1][1])
    a, b = reg.names()[:2]
    SkillSoup(reg, hybrid_model).answer(QUERY, skills={a: 3.0, b: 1.0}, kv=kv, max_new_tokens=2)
    policy, state = got[-1]
    sa, sb = reg.state(a, hybrid_model), reg.state(b, hybrid_model)
    assert policy == kv
    assert state.n_kv_tokens == (sa.n_kv_tokens + sb.n_kv_tokens if kv == "concat" else sa.n_kv_tokens)
    with pytest.raises(MixError, match="unknown kv policy"):
        SkillSoup(reg, hybrid_model).answer(QUERY, kv="mean")


def test_text_and_state_routers_run_on_a_hybrid(reg, hybrid_model):
    router = Router(reg, hybrid_model, RouterParams(threshold=0.0))
    for kind in ("text", "state", "hybrid"):
        assert router.route(QUERY, router=kind), kind
    state = reg.state(reg.names()[0], hybrid_model)
    top_half = state.recurrent[2:]  # 4 recurrent layers: the feature reads the upper two
    manual = torch.cat([(t[0].mean(-1) / t[0].mean(-1).norm()).flatten() for t in top_half]).double()
    assert torch.allclose(torch.from_numpy(state_vector(state)).double(), manual / manual.norm(), atol=1e-6)


def test_compose_with_concatenated_kv(reg, hybrid_model):
    from skillsoup.compose import compose_skill
    from skillsoup.skills.skill import Demonstration

    a, b = reg.names()[:2]
    examples = [Demonstration(d.input, d.output) for d in reg.get(a).demonstrations[:3]]
    result, _ = compose_skill(reg, hybrid_model, "blend", [a, b], examples, budget=3, kv="concat")
    assert result.kv == "concat" and reg.recipe("blend")[0].kv == "concat"
    want = mix([reg.state(a, hybrid_model), reg.state(b, hybrid_model)], result.weights, kv="concat")
    stored = reg.state("blend", hybrid_model, recompute=False)
    assert stored.n_kv_tokens == want.n_kv_tokens
    assert_close("composite", stored.fixed, want.fixed, 1e-6)
    assert torch.allclose(stored.kv_bias, want.kv_bias)
