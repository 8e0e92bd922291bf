"""Routing, state features and fitting on a registry served by ``chroma run`` (started here by the
registry tests' fixture; skipped when the chroma command is missing)."""

from __future__ import annotations

from synthetic import make_labelled, make_skills
from test_registry_chroma_server import chroma_url  # noqa: F401  (the server fixture)

from skillsoup.registry import SkillRegistry
from skillsoup.routing import Router, fit
from skillsoup.routing.state_index import StateFeatureIndex


def test_text_and_state_routing_and_fit_over_a_chroma_server(chroma_url, tmp_path, tiny_model):  # noqa: F811
    with SkillRegistry.open(tmp_path / "reg", chroma_url=chroma_url, embedder="hash:256") as reg:
        reg.add(make_skills(), tiny_model)
        router = Router(reg, tiny_model)
        assert router.route("please set the alarm countdown for ten minutes")[0].name == "timer"
        assert router.route("alarm", router="state")  # the feature collection lives on the server too
        assert len(StateFeatureIndex(reg, tiny_model).vectors()) == 8
        report = fit(router, make_labelled(200, seed=1))
        assert report.n == 200 and Router(reg).params == report.params
