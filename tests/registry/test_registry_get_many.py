"""SkillRegistry.get_many: several skills in one index call, in the order asked, or a clear error."""

from __future__ import annotations

import pytest
from registry_helpers import make_skill

from skillsoup.errors import SkillNotFoundError


def test_get_many_returns_the_skills_in_order(open_registry, tiny_model):
    reg = open_registry()
    reg.add([make_skill("alpha"), make_skill("beta"), make_skill("gamma")], tiny_model)
    assert [s.name for s in reg.get_many(["gamma", "alpha", "gamma"])] == ["gamma", "alpha", "gamma"]
    assert reg.get_many(["beta"]) == [reg.get("beta")]
    with pytest.raises(SkillNotFoundError, match="'nope'"):
        reg.get_many(["alpha", "nope"])
