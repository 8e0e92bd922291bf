"""Export a mean-pooled sentence encoder to ONNX, cache the file, open it with ONNX Runtime.

The cache file is named by a key over the folder's files (names, sizes, modification times), the
torch version and :data:`EXPORT_FORMAT`: a tuned encoder (a new folder) or changed weights get their
own export, and nothing is ever read back from a stale one. An export is written to a temporary file
(:func:`staging`) and renamed only once :meth:`skillsoup.embedding.encoders.OnnxEncoder.export` has
checked it against the reference, so two processes exporting at once both end with a whole file.

    SKILLSOUP_ENCODER_CACHE   where exports live (default: platformdirs user_cache_dir("skillsoup")/onnx_encoders)
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

EXPORT_FORMAT = 1  # bump when the exported graph changes, so old cache files are not used
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")  # the order of MeanPooled.forward


class OnnxUnavailable(Exception):
    """The ONNX path cannot be used for this folder here (a package missing, an export that failed or
    disagreed); the message says which. The embedder falls back to the reference then."""


def cache_dir() -> Path:
    env = os.environ.get("SKILLSOUP_ENCODER_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("skillsoup")) / "onnx_encoders"


def folder_key(folder: Path) -> str:
    import torch

    digest = hashlib.sha256(f"{EXPORT_FORMAT}|{torch.__version__}|{folder.resolve()}".encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"|{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


def cache_path(folder: Path) -> Path:
    return cache_dir() / f"{folder_key(folder)}.onnx"


def cached_session(path: Path, threads: int):
    """The session of an existing export, or None (missing, or a file that does not load: logged)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise OnnxUnavailable("the package onnxruntime is not installed (pip install onnxruntime)") from None
    if not path.is_file():
        return None
    try:
        return make_session(path, threads)
    except Exception as exc:  # a truncated or foreign file: the caller exports again
        log.warning("cached encoder export %s does not load (%s); exporting again", path, exc)
        return None


@contextmanager
def staging(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path``, renamed onto it if the block succeeds, removed in any case."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OnnxUnavailable(f"cannot write the encoder cache {path.parent} ({exc}); set "
                              "SKILLSOUP_ENCODER_CACHE to a writable folder") from None
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def export_network(network, sample: dict, path: Path) -> None:
    """Write ``network`` (token inputs -> embeddings) to ``path``, batch and length left free."""
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
        import torch
    except ImportError:
        raise OnnxUnavailable("the package onnx is not installed (pip install onnx)") from None
    names = [name for name in INPUT_NAMES if name in sample]
    axes = {name: {0: "batch", 1: "tokens"} for name in names} | {"embedding": {0: "batch"}}
    try:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
            torch.onnx.export(network, tuple(sample[n] for n in names), str(path), input_names=names,
                              output_names=["embedding"], dynamic_axes=axes, opset_version=17, dynamo=False)
    except Exception as exc:  # the exporter refused this network
        raise OnnxUnavailable(f"cannot export the encoder to ONNX: {type(exc).__name__}: {exc}") from None


def make_session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    # idle pool threads must not spin: they share the cores with torch's decode threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
