"""SkillRegistry on an embedded Chroma index: add, no-op re-add, replace, states, rebuild, remove,
queries, settings. Uses the hashing embedder; the real one is tested in test_registry_offline.py."""

from __future__ import annotations

import logging

import pytest
import torch
from registry_helpers import make_skill

from skillsoup.errors import RegistryError, SkillNotFoundError, StateError
from skillsoup.registry import SkillRegistry, capture_skill, skill_token_ids
from skillsoup.registry.index import DEMOS
from skillsoup.skills.skill import Demonstration, Skill


def _same_state(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.conv + a.ssm, b.conv + b.ssm)) and a.fingerprint == b.fingerprint


def test_add_then_list_get_and_state(open_registry, tiny_model):
    reg = open_registry()
    a, b = make_skill("alpha"), make_skill("beta", n=2)
    seen = []
    results = reg.add([a, b], tiny_model, progress=lambda done, total, name: seen.append((done, total, name)))
    assert [(r.name, r.status, r.n_demos) for r in results] == [("alpha", "added", 4), ("beta", "added", 2)]
    assert seen == [(1, 2, "alpha"), (2, 2, "beta")] and all(r.seconds > 0 for r in results)
    assert reg.names() == ["alpha", "beta"]
    info = {i.name: i for i in reg.list()}
    assert info["alpha"].n_demos == 4 and info["alpha"].models == (tiny_model.fingerprint,)
    assert info["alpha"].content_hash == a.content_hash and info["alpha"].tags == ("test",)
    assert reg.get("alpha") == a and reg.get("beta") == b
    assert _same_state(reg.state("alpha", tiny_model, recompute=False), capture_skill(tiny_model, a))
    assert "alpha" in reg and "gamma" not in reg


def test_skill_state_starts_at_bos_like_the_neutral_state(tiny_model):
    skill = make_skill("alpha", n=1)
    ids = skill_token_ids(tiny_model, skill)
    assert ids[0] == tiny_model.tokenizer.bos_token_id
    assert ids[1:] == tiny_model.encode(skill.render_demonstrations())


def test_readd_unchanged_is_a_noop(open_registry, tiny_model):
    reg = open_registry()
    reg.add([make_skill("alpha")], tiny_model)
    path = reg.store.path(make_skill("alpha").state_hash, tiny_model.fingerprint)
    before = (path.stat().st_mtime_ns, reg.index.demos.count())
    results = reg.add([make_skill("alpha")], tiny_model)
    assert [r.status for r in results] == ["unchanged"]
    assert (path.stat().st_mtime_ns, reg.index.demos.count()) == before


def test_changed_skill_needs_replace_and_nothing_is_written_without_it(open_registry, tiny_model):
    reg = open_registry()
    reg.add([make_skill("alpha")], tiny_model)
    changed = make_skill("alpha", n=3, description="changed")
    with pytest.raises(RegistryError, match="--replace"):
        reg.add([make_skill("newcomer"), changed], tiny_model)
    assert reg.names() == ["alpha"]  # the conflict was found before any write
    old_state = reg.store.path(make_skill("alpha").state_hash, tiny_model.fingerprint)

    results = reg.add([changed], tiny_model, replace=True)
    assert [r.status for r in results] == ["replaced"]
    assert reg.get("alpha") == changed
    assert reg.index.demos.count() == 3  # the old version's rows are gone
    assert not old_state.exists()  # and its state file
    assert reg.doctor(tiny_model, repair=False).clean


def test_replace_keeping_demonstrations_keeps_states_of_other_models(open_registry, tiny_model, second_model):
    reg = open_registry()
    reg.add([make_skill("alpha")], tiny_model)
    reg.rebuild(second_model)
    reg.add([make_skill("alpha", description="new words")], tiny_model, replace=True)
    assert set(reg.info("alpha").models) == {tiny_model.fingerprint, second_model.fingerprint}
    reg.state("alpha", second_model, recompute=False)  # still valid: same template and demonstrations


def test_same_name_twice_in_one_add_is_rejected(open_registry, tiny_model):
    with pytest.raises(RegistryError, match="given twice"):
        open_registry().add([make_skill("alpha"), make_skill("alpha", n=2)], tiny_model)


@pytest.mark.parametrize("damage", ["flip bytes", "truncate", "delete"])
def test_damaged_state_file_is_detected_and_recomputed(open_registry, tiny_model, damage, caplog):
    reg = open_registry()
    skill = make_skill("alpha")
    reg.add([skill], tiny_model)
    path = reg.store.path(skill.state_hash, tiny_model.fingerprint)
    data = path.read_bytes()
    if damage == "flip bytes":
        path.write_bytes(data[:-16] + bytes(b ^ 0xFF for b in data[-16:]))
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    else:
        path.unlink()
    with pytest.raises(StateError, match="rebuild") as caught:
        reg.state("alpha", tiny_model, recompute=False)
    assert str(caught.value).count("rebuild") == 1  # the advice is given once
    report = reg.doctor(tiny_model, repair=False)
    assert {p.kind for p in report.problems} == {"missing state file" if damage == "delete" else "sha256 mismatch"}
    with caplog.at_level(logging.WARNING, logger="skillsoup.registry"):
        state = reg.state("alpha", tiny_model)
    assert "recomputing it from its" in caplog.text
    assert "rebuild" not in caplog.text and "recompute it" not in caplog.text  # no advice for what is being done
    assert _same_state(state, capture_skill(tiny_model, skill))
    assert reg.doctor(tiny_model, repair=False).clean
    assert _same_state(reg.state("alpha", tiny_model, recompute=False), state)


def test_state_of_another_model_is_never_used(open_registry, tiny_model, second_model):
    """A file swapped for another model's state (with a matching sha in the index) is refused."""
    reg = open_registry()
    skill = make_skill("alpha")
    reg.add([skill], tiny_model)
    foreign = capture_skill(second_model, skill)
    path = reg.store.path(skill.state_hash, tiny_model.fingerprint)
    foreign.save(path)
    from skillsoup.registry.store import file_sha256

    reg.index.set_state("alpha", tiny_model.fingerprint, file_sha256(path))
    with pytest.raises(StateError, match="another model|made by model"):
        reg.state("alpha", tiny_model, recompute=False)
    assert _same_state(reg.state("alpha", tiny_model), capture_skill(tiny_model, skill))


def test_rebuild_after_model_change(open_registry, tiny_model, second_model):
    assert tiny_model.fingerprint != second_model.fingerprint
    reg = open_registry()
    reg.add([make_skill("alpha"), make_skill("beta")], tiny_model)
    with pytest.raises(StateError, match="no state recorded"):
        reg.state("alpha", second_model, recompute=False)
    assert {p.kind for p in reg.doctor(second_model, repair=False).problems} == {"no state for model"}
    seen = []
    results = reg.rebuild(second_model, progress=lambda done, total, name: seen.append((done, total, name)))
    assert [(r.name, r.status) for r in results] == [("alpha", "rebuilt"), ("beta", "rebuilt")]
    assert seen == [(1, 2, "alpha"), (2, 2, "beta")]
    for name in ("alpha", "beta"):
        s1 = reg.state(name, tiny_model, recompute=False)
        s2 = reg.state(name, second_model, recompute=False)
        assert s2.fingerprint == second_model.fingerprint and not _same_state(s1, s2)
    assert set(reg.info("alpha").models) == {tiny_model.fingerprint, second_model.fingerprint}
    assert reg.doctor(second_model, repair=False).clean and reg.doctor(tiny_model, repair=False).clean
    with pytest.raises(SkillNotFoundError):
        reg.rebuild(second_model, names=["nope"])


def test_remove_deletes_rows_and_unshared_state_files(open_registry, tiny_model):
    reg = open_registry()
    alpha = make_skill("alpha")
    twin = Skill("twin", "same demonstrations, other name", alpha.demonstrations)  # shares alpha's state file
    reg.add([alpha, twin, make_skill("beta")], tiny_model)
    shared = reg.store.path(alpha.state_hash, tiny_model.fingerprint)
    reg.remove("alpha")
    assert reg.names() == ["beta", "twin"] and shared.exists()
    reg.state("twin", tiny_model, recompute=False)
    reg.remove("twin")
    assert not shared.exists()
    assert reg.index.demos.count() == 4
    with pytest.raises(SkillNotFoundError, match="skills list"):
        reg.remove("alpha")
    assert reg.doctor(tiny_model, repair=False).clean


def test_queries_find_committed_skills_and_skip_leftover_rows(open_registry, tiny_model):
    reg = open_registry()
    reg.add([make_skill("alpha"), make_skill("beta")], tiny_model)
    vec = reg.embed_texts(["beta input 2"])[0]
    top = reg.query_demonstrations(vec, 1)[0]
    assert (top.skill, top.index) == ("beta", 2) and top.similarity == pytest.approx(1.0, abs=1e-5)
    assert reg.query_skills(reg.embed_texts(["alpha: the alpha skill"])[0], 2)[0].skill == "alpha"
    # rows of an uncommitted version (a crashed replace, a half add) must not be returned
    ghost = Skill("beta", "ghost", (Demonstration("zebra crossing", "x"),))
    reg.index.put_demos(ghost, reg.embed_texts(["zebra crossing"]))
    half = Skill("gamma", "half added", (Demonstration("zebra crossing", "x"),))
    reg.index.put_demos(half, reg.embed_texts(["zebra crossing"]))
    hits = reg.query_demonstrations(reg.embed_texts(["zebra crossing"])[0], 3)
    assert len(hits) == 3 and all(h.similarity < 0.99 for h in hits) and {h.skill for h in hits} <= {"alpha", "beta"}
    assert {p.kind for p in reg.doctor(repair=False).problems} == {"orphan demo row"}
    assert reg.doctor().repaired and reg.doctor(repair=False).clean
    assert reg.index.collection(DEMOS).count() == 8


def test_doctor_finds_and_repairs_leftovers(open_registry, tiny_model):
    reg = open_registry()
    reg.add([make_skill("alpha"), make_skill("beta")], tiny_model)
    orphan = capture_skill(tiny_model, make_skill("gone"))
    reg.store.put(orphan, make_skill("gone").state_hash)  # a state file no row records
    stray = reg.store.root / tiny_model.fingerprint[:16] / ".x.safetensors.abc.tmp"
    stray.write_bytes(b"half a file")
    reg.index.delete_demos([f"beta:{make_skill('beta').content_hash[:12]}:1"])  # an incomplete skill
    reg.store.path(make_skill("alpha").state_hash, tiny_model.fingerprint).unlink()
    report = reg.doctor(tiny_model, repair=False)
    assert report.counts() == {"orphan state file": 1, "stray file": 1, "incomplete demos": 1, "missing state file": 1}
    assert not report.repaired and stray.exists()
    assert reg.doctor(tiny_model).repaired
    assert reg.doctor(tiny_model, repair=False).clean
    assert reg.query_demonstrations(reg.embed_texts(["beta input 1"])[0], 1)[0][::2] == ("beta", 1)
    reg.state("alpha", tiny_model, recompute=False)


def test_doctor_without_a_model_forgets_bad_states_of_any_model(open_registry, tiny_model):
    reg = open_registry()
    reg.add([make_skill("alpha")], tiny_model)
    path = reg.store.path(make_skill("alpha").state_hash, tiny_model.fingerprint)
    path.write_bytes(b"garbage")
    assert reg.doctor().repaired  # no model: the record is dropped, never trusted
    assert reg.info("alpha").models == () and not path.exists()
    assert reg.doctor(repair=False).clean
    reg.state("alpha", tiny_model)  # recomputed on demand
    assert reg.info("alpha").models == (tiny_model.fingerprint,)


def test_settings_are_versioned_json(open_registry):
    reg = open_registry()
    assert reg.settings() == (0, {}) and reg.get_setting("router", "dflt") == "dflt"
    assert reg.set_setting("router", {"top_k": 3, "temperature": 0.5}) == 1
    assert reg.set_setting("mode", "text") == 2
    assert reg.get_setting("router") == {"top_k": 3, "temperature": 0.5}
    assert reg.set_setting("mode", None) == 3 and reg.settings() == (3, {"router": {"top_k": 3, "temperature": 0.5}})
    with pytest.raises(RegistryError, match="JSON"):
        reg.set_setting("bad", {1, 2})
    with pytest.raises(RegistryError, match="JSON"):
        reg.set_setting("bad", float("nan"))
    assert not list(reg.path.glob(".settings.json*"))  # no temp files left behind


def test_registry_remembers_its_embedder(open_registry, tmp_path, tiny_model):
    reg = open_registry(tmp_path / "r")
    reg.add([make_skill("alpha")], tiny_model)
    reg.close()
    again = open_registry(tmp_path / "r", embedder=None)
    assert again.embedder.name == "hash:32" and again.names() == ["alpha"]
    again.close()
    with pytest.raises(RegistryError, match="hash:32"):
        open_registry(tmp_path / "r", embedder="hash:16")


def test_registry_path_that_is_a_file_is_rejected(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(RegistryError, match="is a file"):
        SkillRegistry.open(tmp_path / "file", embedder="hash:8")


def test_empty_registry_reads_without_creating_anything(open_registry):
    reg = open_registry()
    assert reg.names() == [] and reg.list() == []
    assert reg.query_demonstrations(reg.embed_texts(["x"])[0], 3) == []
    assert reg.doctor(repair=False).clean
    with pytest.raises(SkillNotFoundError):
        reg.get("x")


def test_state_sha256_ignores_header_key_order_but_not_content(tmp_path, tiny_model):
    """safetensors writes its header keys in random order: equal states must still hash equal."""
    from skillsoup.registry.store import file_sha256

    state = capture_skill(tiny_model, make_skill("alpha"))
    shas = {file_sha256(state.save(tmp_path / f"{i}.safetensors")) for i in range(6)}
    assert len(shas) == 1
    state.ssm[0][0, 0, 0] += 1e-3
    assert file_sha256(state.save(tmp_path / "changed.safetensors")) not in shas


def test_state_files_are_readable_by_others_and_doctor_reports_one_that_is_not(open_registry, tiny_model,
                                                                               monkeypatch):
    import os
    import stat

    import skillsoup.states.state_file as state_file

    reg = open_registry()
    monkeypatch.setattr(state_file, "_UMASK", 0o022)  # the process's umask, read once at import
    reg.add([make_skill("alpha")], tiny_model)
    path = reg.store.path(make_skill("alpha").state_hash, tiny_model.fingerprint)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # what open() gives under umask 022, not mkstemp's 0600
    if os.geteuid() == 0:
        return  # root reads any file: the unreadable case cannot be shown
    path.chmod(0)
    try:
        kinds = {p.kind for p in reg.doctor(tiny_model, repair=False).problems}
    finally:
        path.chmod(0o644)
    assert kinds == {"unreadable state"}  # one problem line, no PermissionError traceback
