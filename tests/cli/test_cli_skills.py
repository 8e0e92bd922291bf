"""``skillsoup add``, ``skillsoup skills ...``, ``skillsoup doctor``: exit codes, what they print, and
errors as one red line without a traceback."""

from __future__ import annotations

import json

import pytest
from registry_helpers import build_checkpoint, write_skill_yaml

from skillsoup.registry import RegistryLock, SkillRegistry


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory):
    return build_checkpoint(tmp_path_factory.mktemp("cli-mamba-seed2"), "mamba", seed=2)


def _names(cli, *registry) -> list[str]:
    r = cli("skills", "list", "--json", *registry)
    assert r.code == 0
    return [s["name"] for s in json.loads(r.out)]


def test_round_trip_add_list_show_export_add(cli, tmp_path, mamba_dir):
    files = tmp_path / "files"
    write_skill_yaml(files, "upper", n=3, description="Uppercase a word")
    write_skill_yaml(files, "reverse", n=2)
    r = cli("add", files, "--model", mamba_dir)
    assert r.code == 0, r
    assert "upper" in r.out and "reverse" in r.out and "2 added, 0 replaced, 0 unchanged" in r.out
    assert "Loading weights" not in r.err and "it/s" not in r.err  # library progress bars stay quiet

    listed = json.loads(cli("skills", "list", "--json").out)
    assert [(s["name"], s["n_demos"], s["tags"]) for s in listed] == [("reverse", 2, ["test"]), ("upper", 3, ["test"])]
    table = cli("skills", "list")
    assert table.code == 0 and "Uppercase a word" in table.out and "2 skills" in table.out

    shown = cli("skills", "show", "upper")
    assert shown.code == 0 and "Uppercase a word" in shown.out and '"upper input 2" -> "upper output 2"' in shown.out

    exported = tmp_path / "out" / "upper.yaml"
    exported.parent.mkdir()
    assert cli("skills", "export", "upper", "-o", exported).code == 0
    from skillsoup.skills.loader import load_skills

    assert load_skills([exported])[0] == load_skills([files / "upper.yaml"])[0]
    again = cli("add", exported, "--model", mamba_dir)
    assert again.code == 0 and "0 added, 0 replaced, 1 unchanged" in again.out

    stdout = cli("skills", "export", "reverse")
    assert stdout.code == 0 and stdout.out.startswith("name: reverse")


def test_changed_skill_needs_replace(cli, tmp_path, mamba_dir):
    path = write_skill_yaml(tmp_path / "files", "upper", n=3)
    assert cli("add", path, "--model", mamba_dir).code == 0
    write_skill_yaml(tmp_path / "files", "upper", n=4, description="now with four")
    refused = cli("add", path, "--model", mamba_dir)
    assert refused.code == 1 and "--replace" in refused.err and refused.err.count("\n") == 1
    assert json.loads(cli("skills", "list", "--json").out)[0]["n_demos"] == 3
    replaced = cli("add", path, "--replace", "--model", mamba_dir)
    assert replaced.code == 0 and "0 added, 1 replaced, 0 unchanged" in replaced.out
    assert json.loads(cli("skills", "list", "--json").out)[0]["description"] == "now with four"


def test_rebuild_after_a_model_change(cli, tmp_path, mamba_dir, other_model_dir):
    reg = ["--registry", tmp_path / "reg"]
    assert cli("add", write_skill_yaml(tmp_path / "f", "upper"), "--model", mamba_dir, *reg).code == 0
    doctor = cli("doctor", "--no-repair", "--model", other_model_dir, *reg)
    assert doctor.code == 1 and "no state for model" in doctor.out
    rebuilt = cli("skills", "rebuild", "--model", other_model_dir, *reg)
    assert rebuilt.code == 0 and "rebuilt 1 states" in rebuilt.out
    assert len(json.loads(cli("skills", "list", "--json", *reg).out)[0]["models"]) == 2
    assert "healthy" in cli("doctor", "--model", other_model_dir, *reg).out


def test_doctor_finds_a_corrupted_state_and_repairs_it(cli, tmp_path, mamba_dir):
    assert cli("add", write_skill_yaml(tmp_path / "f", "upper"), "--model", mamba_dir).code == 0
    with SkillRegistry.open(embedder="hash:32") as reg:
        path = next(reg.store.files()).path
    path.write_bytes(path.read_bytes()[:-8] + b"\x00" * 8)
    found = cli("doctor", "--no-repair", "--model", mamba_dir)
    assert found.code == 1 and "sha256 mismatch" in found.out and "without --no-repair" in found.err
    fixed = cli("doctor", "--model", mamba_dir)
    assert fixed.code == 0 and "repaired 1 problems" in fixed.out
    assert "healthy" in cli("doctor", "--model", mamba_dir).out
    no_model = cli("doctor")  # no default model: recorded states are still checked
    assert no_model.code == 0 and "no default model" in no_model.err


def test_remove(cli, tmp_path, mamba_dir):
    write_skill_yaml(tmp_path / "f", "upper")
    write_skill_yaml(tmp_path / "f", "lower")
    assert cli("add", tmp_path / "f", "--model", mamba_dir).code == 0
    r = cli("skills", "remove", "upper")
    assert r.code == 0 and "removed upper" in r.out
    assert _names(cli) == ["lower"]


def test_default_model_comes_from_the_environment(cli, tmp_path, mamba_dir, monkeypatch):
    path = write_skill_yaml(tmp_path / "f", "upper")
    missing = cli("add", path)
    assert missing.code == 1 and "no default model yet; pass --model DIR" in missing.err
    monkeypatch.setenv("SKILLSOUP_MODEL", str(mamba_dir))
    assert cli("add", path).code == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["skills", "show", "nope"], "no skill named 'nope'"),
        (["skills", "remove", "nope"], "no skill named 'nope'"),
        (["skills", "export", "nope"], "no skill named 'nope'"),
        (["skills", "list", "--chroma-url", "ftp://nowhere"], "HOST:PORT"),
        (["add", "missing.yaml", "--model", "unused"], "missing.yaml"),
    ],
    ids=["show", "remove", "export", "bad-chroma-url", "missing-file"],
)
def test_errors_are_one_red_line(cli, args, message):
    r = cli(*args)
    assert r.code == 1, r
    assert r.err.startswith("error:") and message in r.err and r.err.count("\n") == 1


def test_locked_registry_is_one_red_line(cli, tmp_path, mamba_dir, monkeypatch):
    import os

    monkeypatch.setenv("SKILLSOUP_LOCK_TIMEOUT", "0.2")
    path = write_skill_yaml(tmp_path / "f", "upper")
    assert cli("add", path, "--model", mamba_dir).code == 0  # creates the registry
    with SkillRegistry.open(embedder="hash:32") as reg, RegistryLock(reg.path):
        r = cli("skills", "remove", "upper")
    assert r.code == 1 and f"being written by another process (pid {os.getpid()})" in r.err
    assert r.err.count("\n") == 1
    assert _names(cli) == ["upper"]


def test_ctrl_c_during_add_says_aborted_and_keeps_what_was_stored(cli, tmp_path, mamba_dir, monkeypatch):
    assert cli("add", write_skill_yaml(tmp_path / "f", "upper"), "--model", mamba_dir).code == 0

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("skillsoup.registry.registry.capture_skill", interrupted)  # Ctrl-C while capturing
    r = cli("add", write_skill_yaml(tmp_path / "g", "reverse"), "--model", mamba_dir)
    assert (r.code, r.err) == (130, "aborted\n")
    assert _names(cli) == ["upper"]
    assert cli("doctor", "--model", mamba_dir).code == 0


def test_empty_registry_says_how_to_add(cli):
    r = cli("skills", "list")
    assert r.code == 0 and "skillsoup add" in r.out
    assert json.loads(cli("skills", "list", "--json").out) == []


def test_show_reports_the_state_size_of_a_hybrid(cli, tmp_path, hybrid_dir, mamba_dir):
    path = write_skill_yaml(tmp_path / "f", "upper", n=3)
    assert cli("add", path, "--model", hybrid_dir).code == 0
    assert cli("add", path, "--model", mamba_dir).code == 0
    shown = cli("skills", "show", "upper")
    assert shown.code == 0, shown
    lines = [line for line in shown.out.splitlines() if line.strip().startswith("state ") and "…" in line]
    assert len(lines) == 2  # one per model
    hybrid = next(line for line in lines if "attention" in line)
    assert "6 layers: 4 recurrent, 2 attention" in hybrid and "KV tokens" in hybrid and "KiB" in hybrid
    assert any("2 layers: 2 recurrent" in line and "KV" not in line for line in lines)
