"""The query encoder's fast path (ONNX Runtime) against its reference (torch), on a tiny random BERT
built here: same vectors on padded, truncated, lower-cased and one-text batches; the export cached by
the folder's files and redone when they change; a broken cache file replaced; a refused export leaves
nothing behind; the embedder falls back to the reference (or fails, when asked for onnx) and says why."""

from __future__ import annotations

import logging
import os
import sys

import numpy as np
import pytest
from helpers import build_sentence_encoder

from skillsoup import embedding
from skillsoup.embedding import MeanPooledEncoder, OnnxEncoder, TextEmbedder, encoders
from skillsoup.embedding.onnx_export import OnnxUnavailable
from skillsoup.errors import ModelLoadError

WORDS = "set a timer for ten minutes convert three km to meters the weather today is sunny book table".split()
TEXTS = ["  Set a timer for ten minutes ", "convert three km to meters", "x", "the weather today is sunny " * 6,
         "book a table", "Ünïcödé çafé"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    # 16 tokens at most: the long text is truncated; upper case only matches the vocabulary lower-cased
    return build_sentence_encoder(tmp_path_factory.mktemp("enc") / "tiny-bert", WORDS, max_seq_length=16, lower=True)


@pytest.fixture(autouse=True)
def _fresh(tmp_path, monkeypatch):
    monkeypatch.setenv("SKILLSOUP_ENCODER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SKILLSOUP_EMBED_IMPL", raising=False)
    monkeypatch.setattr(embedding, "_MODELS", {})


def _cached(tmp_path):
    return sorted((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else []


def test_onnx_encoder_gives_the_reference_vectors(encoder_dir):
    reference, fast = MeanPooledEncoder(encoder_dir), OnnxEncoder.load(encoder_dir, threads=1)
    want = reference.encode(TEXTS)
    assert want.shape == (len(TEXTS), 32) and np.allclose(np.linalg.norm(want, axis=1), 1.0, atol=1e-5)
    for batch_size in (64, 4, 1):  # one padded batch, two batches, no padding
        np.testing.assert_allclose(fast.encode(TEXTS, batch_size=batch_size), want, atol=1e-5)
    assert fast.encode([]).shape == (0, 32) and fast.get_sentence_embedding_dimension() == 32
    assert fast.session.get_session_options().intra_op_num_threads == 1


def test_the_embedder_uses_onnx_by_default_with_torch_threads(encoder_dir, tmp_path):
    import torch

    embedder = TextEmbedder(encoder_dir)
    assert isinstance(embedder.model, OnnxEncoder) and embedder.dim == 32
    assert embedder.model.session.get_session_options().intra_op_num_threads == torch.get_num_threads()
    np.testing.assert_allclose(embedder.embed(TEXTS), MeanPooledEncoder(encoder_dir).encode(TEXTS), atol=1e-5)
    assert [p.suffix for p in _cached(tmp_path)] == [".onnx"]


def test_the_export_is_cached_and_redone_when_the_folder_changes(encoder_dir, tmp_path, monkeypatch):
    import shutil

    folder = shutil.copytree(encoder_dir, tmp_path / "copy")
    OnnxEncoder.load(folder)
    first = _cached(tmp_path)
    calls = []
    real_export = OnnxEncoder.export
    monkeypatch.setattr(OnnxEncoder, "export", lambda *a: (calls.append(a), real_export(*a)))
    OnnxEncoder.load(folder)
    assert calls == [] and _cached(tmp_path) == first  # read back, not exported again
    weights = folder / "model.safetensors"
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))  # e.g. re-tuned
    OnnxEncoder.load(folder)
    assert len(calls) == 1 and len(_cached(tmp_path)) == 2


def test_a_broken_cache_file_is_exported_again(encoder_dir, tmp_path, caplog):
    OnnxEncoder.load(encoder_dir)
    (path,) = _cached(tmp_path)
    path.write_bytes(b"not an onnx file")
    with caplog.at_level(logging.WARNING, logger="skillsoup"):
        fast = OnnxEncoder.load(encoder_dir)
    assert "does not load" in caplog.text and path.stat().st_size > 1000
    np.testing.assert_allclose(fast.encode(TEXTS), MeanPooledEncoder(encoder_dir).encode(TEXTS), atol=1e-5)


def test_an_export_that_disagrees_with_the_reference_is_refused_and_not_kept(encoder_dir, tmp_path, monkeypatch,
                                                                           caplog):
    monkeypatch.setattr(encoders, "MAX_ERROR", -1.0)
    with pytest.raises(OnnxUnavailable, match="differs from the reference"):
        OnnxEncoder.load(encoder_dir)
    assert _cached(tmp_path) == []  # no partial file left
    with caplog.at_level(logging.WARNING, logger="skillsoup"):
        embedder = TextEmbedder(encoder_dir)
        assert isinstance(embedder.model, MeanPooledEncoder)  # auto falls back, and says why
    assert "embedding on torch" in caplog.text and "differs from the reference" in caplog.text


def test_an_unwritable_cache_falls_back_to_the_reference(encoder_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("SKILLSOUP_ENCODER_CACHE", str(blocker / "cache"))
    with pytest.raises(OnnxUnavailable, match="SKILLSOUP_ENCODER_CACHE"):
        OnnxEncoder.load(encoder_dir)
    assert isinstance(TextEmbedder(encoder_dir).model, MeanPooledEncoder)


def test_impl_setting(encoder_dir, monkeypatch):
    monkeypatch.setenv("SKILLSOUP_EMBED_IMPL", "ref")
    assert isinstance(TextEmbedder(encoder_dir).model, MeanPooledEncoder)
    monkeypatch.setenv("SKILLSOUP_EMBED_IMPL", "fastest")
    with pytest.raises(ModelLoadError, match="SKILLSOUP_EMBED_IMPL='fastest' is not one of auto, onnx, ref"):
        _ = TextEmbedder(encoder_dir).model
    monkeypatch.setenv("SKILLSOUP_EMBED_IMPL", "onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    with pytest.raises(ModelLoadError, match="SKILLSOUP_EMBED_IMPL=onnx, but the package onnxruntime is not installed"):
        _ = TextEmbedder(encoder_dir).model
    monkeypatch.setenv("SKILLSOUP_EMBED_IMPL", "auto")
    assert isinstance(TextEmbedder(encoder_dir).model, MeanPooledEncoder)
