"""Encoder tuning (fit --tune-encoder): training pairs and batches, the tuned folder, the decision
(judged on labelled queries, kept only when it wins), the switch of a registry's index (every row
re-embedded, the encoder stored in the registry under a relative name), an interrupted switch that
doctor finishes, and the CLI. A tiny random BERT built here stands in for MiniLM."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
from helpers import build_sentence_encoder
from synthetic import FILLER, TOPICS, UNRELATED, make_labelled, make_skills, write_jsonl

from skillsoup.errors import LabelledDataError, ModelLoadError, RoutingError
from skillsoup.registry import SkillRegistry, encoders
from skillsoup.routing import Router
from skillsoup.routing import tune as tune_mod
from skillsoup.routing.encoder_tuning import TuningSettings, distinct_batches, training_pairs, tune_encoder

FAST = TuningSettings(pairs_per_demo=1, batch_size=8, lr=1e-3, epochs=2)


def _build_encoder(folder):
    words = ({w for v in TOPICS.values() for w in v.split()} | set(FILLER) | set(UNRELATED)
             | set(" ".join(TOPICS).split()) | {"the", "skill"})
    return build_sentence_encoder(folder, words)


@pytest.fixture(scope="module")
def base_encoder(tmp_path_factory):
    return _build_encoder(tmp_path_factory.mktemp("encoder") / "tiny-bert")


@pytest.fixture
def registry_path(base_encoder, tmp_path, tiny_model):
    path = tmp_path / "bert-reg"
    with SkillRegistry.open(path, embedder=str(base_encoder)) as reg:
        reg.add(make_skills(n_demos=6), tiny_model)
    return path


@pytest.fixture
def labelled(tmp_path):
    return write_jsonl(tmp_path / "fit.jsonl", make_labelled(120, null_share=0.25))


def _index_vectors(reg) -> dict[str, np.ndarray]:
    out = {}
    for key in ("skills", "demonstrations"):
        res = reg.index.client.get_collection(key, embedding_function=None).get(include=["embeddings", "documents"])
        out.update({f"{key}/{i}": (np.asarray(e, np.float32), d) for i, e, d in zip(res["ids"], res["embeddings"], res["documents"])})
    return out


# ---- training data ---------------------------------------------------------------------------
def test_pairs_stay_within_a_skill_and_batches_hold_distinct_skills():
    demos = {"a": ["a1", "a2", "a3", "a2"], "b": ["b1", "b2"], "c": ["c1"], "d": ["d1", "d2", "d3"]}
    pairs = training_pairs(demos, 2, random.Random(0))
    assert all(anchor[0] == skill and pos[0] == skill and anchor != pos for skill, anchor, pos in pairs)
    assert not any(skill == "c" for skill, _, _ in pairs)  # one demonstration: no positive
    assert sum(skill == "a" for skill, _, _ in pairs) == 6  # the repeated "a2" counts once: 3 anchors x 2
    batches = distinct_batches(pairs, 3, random.Random(0))
    assert all(1 < len(b) <= 3 and len({p[0] for p in b}) == len(b) for b in batches)
    assert sum(map(len, batches)) <= len(pairs)  # leftovers of a single skill have no negatives and are dropped


def test_tuning_needs_two_skills_with_pairs(base_encoder, tmp_path):
    with pytest.raises(RoutingError, match="at least two skills"):
        tune_encoder(base_encoder, {"a": ["x", "y"], "b": ["z"]}, tmp_path / "out", FAST)
    with pytest.raises(RoutingError, match="mean pooling"):
        tune_encoder(tmp_path, {"a": ["x", "y"], "b": ["z", "w"]}, tmp_path / "out", FAST)


def test_tuned_folder_loads_as_an_encoder_and_the_loss_falls(base_encoder, tmp_path):
    from skillsoup.embedding import MeanPooledEncoder, TextEmbedder

    demos = {s.name: [d.input for d in s.demonstrations] for s in make_skills(n_demos=6)}
    seen = []
    result = tune_encoder(base_encoder, demos, tmp_path / "tuned", TuningSettings(batch_size=8, lr=1e-3, epochs=4),
                          progress=lambda step, steps, loss: seen.append((step, steps)))
    assert seen[-1] == (result.steps, result.steps) and result.loss_last < result.loss_first
    assert MeanPooledEncoder.handles(result.folder) and (result.folder / "model.safetensors").is_file()
    assert not list(result.folder.rglob("*.bin")) and not list(result.folder.rglob("*.pkl"))
    texts = ["timer alarm minutes", "weather rain forecast"]
    base, tuned = TextEmbedder(base_encoder).embed(texts), TextEmbedder(result.folder).embed(texts)
    np.testing.assert_allclose(np.linalg.norm(tuned, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(base, tuned, atol=1e-3)  # the weights moved


# ---- the decision ----------------------------------------------------------------------------
class _Report:
    def __init__(self, **chosen):
        self.chosen, self.routers = "classifier", {"classifier": chosen}


def _trial(label, in_scope, real, pseudo, judged):
    return tune_mod.EncoderTrial(label, label, _Report(in_scope_accuracy=in_scope, abstain_recall_real=real,
                                                      abstain_recall_pseudo=pseudo, objective_labelled=judged))


def test_the_current_encoder_stays_unless_another_wins_on_labelled_queries():
    current = _trial("current", 0.80, 0.70, 0.60, 0.750)
    assert tune_mod._decide([current, _trial("tuned", 0.90, 0.50, 0.99, 0.700)], True).label == "current"
    assert tune_mod._decide([current, _trial("tuned", 0.80, 0.70, 0.99, 0.751)], True).label == "current"  # margin
    assert tune_mod._decide([current, _trial("tuned", 0.82, 0.72, 0.50, 0.770)], True).label == "tuned"
    # too few labelled nulls: in-scope accuracy decides, and held-out skills must not be refused less
    assert tune_mod._decide([current, _trial("tuned", 0.85, None, 0.55, None)], False).label == "current"
    assert tune_mod._decide([current, _trial("tuned", 0.85, None, 0.60, None)], False).label == "tuned"
    base = _trial("base", 0.84, 0.75, 0.6, 0.795)
    assert tune_mod._decide([current, base, _trial("tuned", 0.85, 0.75, 0.6, 0.796)], True).label == "base"


# ---- the switch ------------------------------------------------------------------------------
def _force(monkeypatch, label):
    monkeypatch.setattr(tune_mod, "_decide", lambda trials, judged: next(t for t in trials if t.label == label))


def test_a_winning_tuned_encoder_is_stored_and_the_whole_index_re_embedded(registry_path, labelled, monkeypatch, tmp_path):
    from skillsoup.embedding import TextEmbedder

    _force(monkeypatch, "tuned")
    with SkillRegistry.open(registry_path) as reg:
        before = _index_vectors(reg)
        report = tune_mod.fit_tuned(Router(reg), labelled, settings=FAST)
        name = reg.embedder.name
        assert report.kept == "tuned" and report.encoder == name and name.startswith("tuned:")
        assert [t.label for t in report.trials] == ["current", "tuned"]
        assert report.reembedded == len(before)
        assert report.fit.params.fitted["encoder"] == name and Router(reg).status()["encoder"] == name
    folder = encoders.folder_of(registry_path, name)
    record = json.loads((folder / "tuning.json").read_text())
    assert record["base"].endswith("tiny-bert")
    assert record["skills"] == 8 and record["demonstrations"] == 48 and set(record["judged"]) == {"current", "tuned"}
    assert [p.name for p in (registry_path / "encoders").iterdir()] == [folder.name]  # no staging left
    # the registry moves: the encoder's name is relative to it; every row holds the tuned encoder's vector
    moved = tmp_path / "moved"
    shutil.copytree(registry_path, moved)
    shutil.rmtree(registry_path)
    with SkillRegistry.open(moved) as reg:
        assert reg.embedder.name == name
        after = _index_vectors(reg)
        assert after.keys() == before.keys()
        tuned = TextEmbedder(moved / "encoders" / folder.name)
        demo_ids = sorted(k for k in after if k.startswith("demonstrations/"))
        np.testing.assert_allclose(np.stack([after[k][0] for k in demo_ids]),
                                   tuned.embed([after[k][1] for k in demo_ids]), atol=1e-5)
        assert not np.allclose(after[demo_ids[0]][0], before[demo_ids[0]][0], atol=1e-3)
        matches = Router(reg).route("set a timer for ten minutes alarm")  # the fitted router reads the new index
        assert all(m.name in TOPICS for m in matches)


def test_trials_leave_the_router_as_the_user_had_it(registry_path, labelled, monkeypatch):
    # the final fit's "unfitted" router is the one the user had, whatever the trials chose
    seen = []
    real_fit = tune_mod.fit

    def spy(router, items, save=True, objective="balanced", encoder=None):
        seen.append((router.params.policy, router.params.threshold, save))
        return real_fit(router, items, save=save, objective=objective, encoder=encoder)

    monkeypatch.setattr(tune_mod, "fit", spy)
    _force(monkeypatch, "current")
    with SkillRegistry.open(registry_path) as reg:
        router = Router(reg)
        start = (router.params.policy, router.params.threshold)
        tune_mod.fit_tuned(router, labelled, settings=FAST)
    assert [s[2] for s in seen] == [False, False, True]
    assert all(s[:2] == start for s in seen)


def test_a_losing_tuned_encoder_leaves_the_registry_as_it_was(registry_path, labelled, monkeypatch):
    _force(monkeypatch, "current")
    with SkillRegistry.open(registry_path) as reg:
        before, name = _index_vectors(reg), reg.embedder.name
        report = tune_mod.fit_tuned(Router(reg), labelled, settings=FAST)
        assert report.kept == "current" and report.reembedded == 0 and reg.embedder.name == name
        after = _index_vectors(reg)
    assert all(np.array_equal(before[k][0], after[k][0]) for k in before)
    assert not list((registry_path / "encoders").iterdir())  # the candidate is gone
    with SkillRegistry.open(registry_path) as reg:
        assert Router(reg).params.fitted["encoder"] == name  # the fit was still saved


def test_tuning_again_starts_from_the_base_encoder(registry_path, labelled, monkeypatch):
    _force(monkeypatch, "tuned")
    with SkillRegistry.open(registry_path) as reg:
        base = reg.embedder.name
        first = tune_mod.fit_tuned(Router(reg), labelled, settings=FAST).encoder
        _force(monkeypatch, "base")
        report = tune_mod.fit_tuned(Router(reg), labelled, settings=FAST)
        assert [t.label for t in report.trials] == ["current", "base", "tuned"]
        assert [t.encoder for t in report.trials[:2]] == [first, base] and reg.embedder.name == base
    assert not list((registry_path / "encoders").iterdir())  # the unused tuned encoder is removed


def test_tuning_needs_labelled_queries_and_a_local_mean_pooled_encoder(registry_path, syn_registry):
    with SkillRegistry.open(registry_path) as reg:
        with pytest.raises(LabelledDataError, match="needs labelled queries"):
            tune_mod.fit_tuned(Router(reg), None, settings=FAST)
    with pytest.raises(RoutingError, match="local sentence-transformers folder"):  # hash:256
        tune_mod.fit_tuned(Router(syn_registry), make_labelled(40), settings=FAST)


def test_a_missing_encoder_folder_is_one_clear_error(registry_path, labelled, monkeypatch):
    _force(monkeypatch, "tuned")
    with SkillRegistry.open(registry_path) as reg:
        tune_mod.fit_tuned(Router(reg), labelled, settings=FAST)
    shutil.rmtree(registry_path / "encoders")
    with pytest.raises(ModelLoadError, match="copy the whole registry folder"):
        SkillRegistry.open(registry_path)


def test_doctor_finishes_an_interrupted_switch(registry_path, base_encoder):
    from skillsoup.registry.index import SKILLS

    demos = {s.name: [d.input for d in s.demonstrations] for s in make_skills(n_demos=6)}
    staged = encoders.staging(registry_path)
    tune_encoder(base_encoder, demos, staged, FAST)
    name = encoders.publish(registry_path, staged, {"base": str(base_encoder)})
    leftover = encoders.staging(registry_path)  # a candidate of a killed tuning
    with SkillRegistry.open(registry_path) as reg:
        col = reg.index.client.get_collection(SKILLS, embedding_function=None)
        col.modify(metadata=dict(col.metadata, embedder_next=name))  # killed after step 2 of a switch
        assert encoders.pending(reg) == name and reg.embedder.name == str(base_encoder)  # it still opens
        assert {"interrupted encoder switch", "stray file"} <= set(reg.doctor(repair=False).counts())
        assert reg.doctor(repair=True).repaired
        assert reg.embedder.name == name and encoders.pending(reg) is None and not leftover.exists()
    with SkillRegistry.open(registry_path) as reg:
        assert reg.embedder.name == name and reg.doctor(repair=False).clean


def test_cli_fit_tune_encoder(registry_path, labelled, monkeypatch, capsys):
    from skillsoup.cli import main

    _force(monkeypatch, "tuned")
    assert main(["fit", str(labelled), "--tune-encoder", "--json", "--registry", str(registry_path)]) in (0, None)
    data = json.loads(capsys.readouterr().out)
    assert data["encoder"]["kept"] == "tuned" and data["encoder"]["encoder"].startswith("tuned:")
    assert {t["label"] for t in data["encoder"]["trials"]} == {"current", "tuned"}
    assert data["params"]["fitted"]["encoder"] == data["encoder"]["encoder"]
    code = main(["fit", "--tune-encoder", "--registry", str(registry_path)])  # no FILE: one red line
    captured = capsys.readouterr()
    assert code == 1 and "needs labelled queries" in captured.err and "Traceback" not in captured.err
