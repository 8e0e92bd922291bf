"""A composite skill through a skill file: ``skills export`` writes its recipe under ``recipe:``,
``add`` of that file mixes it again from the sources the target registry holds (the same state,
bit for bit), and refuses in one line, before writing anything, when a source is missing or is
another version than the one the weights were found for."""

from __future__ import annotations

import dataclasses

import pytest
from test_compose import _recipe, blend_pair

from skillsoup.demo import DEMO_MODEL_DIR, corpus
from skillsoup.errors import SkillFileError
from skillsoup.skills.loader import dump_skill_yaml, load_skill_file, parse_skills
from skillsoup.skills.recipe import Recipe, RecipePart
from skillsoup.skills.skill import Demonstration, Skill
from skillsoup.states.state import relative_state_error


def _registry(path):
    from skillsoup.registry import SkillRegistry

    return SkillRegistry.open(path)


def _write(folder, *skills) -> list:
    folder.mkdir(exist_ok=True)
    files = []
    for skill in skills:
        files.append(folder / f"{skill.name}.yaml")
        files[-1].write_text(dump_skill_yaml(skill), encoding="utf-8")
    return files


def _names(cli, path) -> list[str]:
    import json

    code, out, _ = cli("skills", "list", "--json", "--registry", path)
    assert code == 0
    return [s["name"] for s in json.loads(out)]


def test_export_then_add_rebuilds_the_composite(cli, tmp_path, demo_model):
    a, b = blend_pair()
    sources = _write(tmp_path / "skills", corpus.skill_object(a), corpus.skill_object(b))
    first = tmp_path / "first"
    assert cli("add", *sources, "--model", DEMO_MODEL_DIR, "--registry", first)[0] == 0
    with _registry(first) as reg:
        skill = Skill("blend", "mostly one, some other", tuple(corpus.sample_pairs(a, 3, "heldout", seed=1)),
                      tags=("composite",), tests=tuple(corpus.sample_pairs(b, 1, "heldout", seed=2)))
        reg.add_composite(skill, _recipe(reg, [a, b], [0.8, 0.2], demo_model), demo_model)
        recipe, info = reg.recipe("blend")[0], reg.info("blend")
        stored = reg.state("blend", demo_model, recompute=False)

    exported = tmp_path / "blend.yaml"
    code, _, err = cli("skills", "export", "blend", "-o", exported, "--registry", first)
    assert code == 0, err
    assert "\nrecipe:\n  format: skillsoup-recipe/1\n  parts:\n  - name: " in exported.read_text(encoding="utf-8")
    loaded = load_skill_file(exported)[0]
    assert loaded.recipe == recipe and dataclasses.replace(loaded, recipe=None) == skill

    second = tmp_path / "second"  # no sources there: one line, nothing written
    code, _, err = cli("add", exported, "--model", DEMO_MODEL_DIR, "--registry", second)
    assert code == 1 and err.count("\n") == 1
    assert err.startswith(f"error: composite skill 'blend' mixes skill '{a}', which registry") and "add" in err
    assert _names(cli, second) == []

    code, out, err = cli("add", *sources, exported, "--model", DEMO_MODEL_DIR, "--registry", second)
    assert code == 0 and "3 added" in out, err
    with _registry(second) as reg:
        again = reg.info("blend")
        assert (again.content_hash, again.state_hash) == (info.content_hash, info.state_hash)
        assert reg.recipe("blend") == (recipe, [])
        assert relative_state_error(reg.state("blend", demo_model, recompute=False), stored) == 0
    code, out, _ = cli("add", exported, "--model", DEMO_MODEL_DIR, "--registry", second)
    assert code == 0 and "1 unchanged" in out

    third = tmp_path / "third"  # a source with other demonstrations: not what the weights were found for
    other = _write(tmp_path / "other", corpus.skill_object(a), corpus.skill_object(b, n_demos=5))
    code, _, err = cli("add", *other, exported, "--model", DEMO_MODEL_DIR, "--registry", third)
    assert code == 1 and err.count("\n") == 1 and f"mixes '{b}' as it was when its weights were found" in err
    assert "skillsoup compose blend --from" in err and _names(cli, third) == []

    with _registry(first) as reg:  # an unreadable recipe is an error, not a plain skill
        reg.index.skills.update(ids=["blend"], metadatas=[{"recipe": "{not json"}])
    code, out, err = cli("skills", "export", "blend", "--registry", first)
    assert code == 1 and "recipe of composite skill 'blend' is unreadable" in err and out == ""


def _recipe_yaml(**changes) -> dict:
    recipe = Recipe(parts=(RecipePart("a", "c1", "s1", 0.75), RecipePart("b", "c2", "s2", 0.25)), conv="mix",
                    method="cma-es/simplex", model="f" * 64, n_examples=4, nll_best=0.5)
    data = recipe.to_dict()
    data.update(changes)
    return {k: v for k, v in data.items() if v != "DROP"}


def test_a_recipe_round_trips_through_yaml():
    skill = Skill("blend", "a mix", (Demonstration("x", "y"),), recipe=Recipe.from_dict(_recipe_yaml()))
    back = parse_skills(dump_skill_yaml(skill), "yaml")[0]
    assert back == skill and back.recipe.weights == [0.75, 0.25] and back.recipe.nll_uniform is None
    assert back.content_hash == dataclasses.replace(skill, recipe=None).content_hash  # the registry keeps it apart


@pytest.mark.parametrize("changes, message", [
    ({"parts": "DROP"}, "it has no parts:"),
    ({"parts": [{"name": "a", "content_hash": "c", "state_hash": "s", "weight": 1.0}]}, "at least 2 sources"),
    ({"parts": [{"name": "a", "content_hash": "c", "state_hash": "s", "weight": "heavy"}] * 2},
     "source 1 of parts: weight: must be a finite number, got 'heavy'"),
    ({"weights": [0.5, 0.5]}, "unknown key 'weights'"),
    ({"conv": "blend"}, "conv: must be one of mix, top, got 'blend'"),
    ({"format": "other/9"}, "format: must be skillsoup-recipe/1"),
    ({"n_examples": -1}, "n_examples: must be a whole number >= 0"),
    ({"parts": [{"name": "blend", "content_hash": "c", "state_hash": "s", "weight": 0.5}] * 2}, "lists itself"),
    ({"parts": [{"name": "a", "content_hash": "c", "state_hash": "s", "weight": 0.5}] * 2}, "lists 'a' twice"),
], ids=["no-parts", "one-part", "weight-text", "unknown-key", "bad-conv", "format", "negative-count", "itself",
        "twice"])
def test_a_bad_recipe_is_a_file_error_at_its_line(changes, message):
    import yaml

    text = yaml.safe_dump({"name": "blend", "description": "a mix", "recipe": _recipe_yaml(**changes),
                           "demonstrations": [{"input": "x", "output": "y"}]}, sort_keys=False)
    line = text.splitlines().index("recipe:") + 2  # the recipe's mapping starts on the next line
    with pytest.raises(SkillFileError, match="composite skill 'blend'") as caught:
        parse_skills(text, "yaml", source="blend.yaml")
    assert str(caught.value).startswith(f"blend.yaml:{line}:") and message in str(caught.value)
