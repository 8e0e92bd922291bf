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


class Clock:
    """time.monotonic of registry/recent.py, moved by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_recent_rows_are_never_stale_after_this_process_writes(open_registry, tiny_model, monkeypatch):
    """A server reads each request's skill from memory (rows_max_age); a skill it adds, replaces or
    removes itself shows at once, however young the remembered rows are."""
    from skillsoup.registry import recent

    monkeypatch.setattr(recent.time, "monotonic", Clock())
    reg = open_registry()
    reg.rows_max_age = 60.0
    reg.add([make_skill("alpha", description="first"), make_skill("beta")], tiny_model)
    assert reg.get_many(["alpha"])[0].description == "first" and "beta" in reg
    reads = []
    real = reg.index.get_skills
    monkeypatch.setattr(reg.index, "get_skills", lambda names=None: (reads.append(names), real(names))[1])
    assert reg.get_many(["alpha", "beta"])[0].description == "first" and "alpha" in reg
    assert reads == []  # both rows came from memory
    reg.add([make_skill("alpha", description="second")], tiny_model, replace=True)
    assert reg.get_many(["alpha"])[0].description == "second"
    reg.remove("beta")
    assert "beta" not in reg
    with pytest.raises(SkillNotFoundError, match="'beta'"):
        reg.get_many(["beta"])


def test_another_process_writes_show_once_the_rows_are_max_age_old(open_registry, tiny_model, monkeypatch):
    """Writes by another process (here a second registry object on the same index, as `skillsoup add`
    against a shared Chroma server) bump nothing here: they show once the rows are rows_max_age old."""
    from skillsoup.registry import recent

    clock = Clock()
    monkeypatch.setattr(recent.time, "monotonic", clock)
    server, other = open_registry(), open_registry()
    server.rows_max_age = 1.0
    other.add([make_skill("alpha", description="first"), make_skill("beta")], tiny_model)
    assert server.get_many(["alpha"])[0].description == "first" and "gamma" not in server
    other.add([make_skill("alpha", description="second"), make_skill("gamma")], tiny_model, replace=True)
    other.remove("beta")
    clock.now += 0.5
    assert server.get_many(["alpha"])[0].description == "first" and "gamma" not in server  # within max_age
    assert server.get_many(["gamma"])[0].name == "gamma"  # a name not known to exist is always read again
    clock.now += 0.6
    assert server.get_many(["alpha"])[0].description == "second" and "gamma" in server and "beta" not in server
    server.rows_max_age = 0.0  # the default: every read goes to the index
    other.remove("gamma")
    assert "gamma" not in server


def test_the_routing_commit_check_reads_from_memory_and_sees_this_process_writes(open_registry, tiny_model, monkeypatch):
    """With rows_max_age (a server), which version of each retrieved skill is committed comes from
    memory; a replace by this process shows at once: only the new version's rows are found."""
    from skillsoup.registry import recent

    monkeypatch.setattr(recent.time, "monotonic", Clock())
    reg = open_registry()
    reg.rows_max_age = 60.0
    reg.add([make_skill("alpha"), make_skill("beta")], tiny_model)
    query = reg.embed_texts(["alpha input 1"])[0]
    first = reg.query_demonstrations(query, 4)
    reads = []
    real = reg.index.skill_metadata
    monkeypatch.setattr(reg.index, "skill_metadata", lambda names=None: (reads.append(names), real(names))[1])
    assert reg.query_demonstrations(query, 4) == first and reads == []  # the commit check came from memory
    reg.add([make_skill("alpha", n=3, description="fewer demonstrations")], tiny_model, replace=True)
    hits = reg.query_demonstrations(query, 20)
    assert reads and sorted(m.index for m in hits if m.skill == "alpha") == [0, 1, 2]  # the new version only
