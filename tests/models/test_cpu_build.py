"""Building the C kernels: the per-user cache, concurrent builders, and the fallback to the
PyTorch ops (logged once) when there is no compiler or the build fails."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import pytest
import torch

from skillsoup.errors import KernelUnavailableError
from skillsoup.models import cpu_build, dispatch


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """An empty kernel cache and no library loaded; the real one is found again afterwards."""
    monkeypatch.setenv("SKILLSOUP_KERNEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(dispatch, "_warned", set())
    cpu_build.reset()
    yield tmp_path / "cache"
    cpu_build.reset()


def test_without_a_compiler_auto_falls_back_to_the_reference_and_says_so_once(fresh, monkeypatch, caplog):
    monkeypatch.setenv("CC", "/nowhere/cc")
    lib, why = cpu_build.load()
    assert lib is None and "no C compiler" in why
    with caplog.at_level(logging.WARNING, logger="skillsoup.models.dispatch"):
        for _ in range(3):
            name, namespace = dispatch.resolve("auto", torch.device("cpu"))
            assert (name, namespace) == ("ref", dispatch.REF_OPS)
    assert [r.getMessage() for r in caplog.records] == [f"using the pure-PyTorch ops on CPU: {why}"]
    with pytest.raises(KernelUnavailableError, match="impl='cpu' cannot run: no C compiler"):
        dispatch.resolve("cpu", torch.device("cpu"))


def test_a_failing_build_falls_back_and_leaves_no_partial_library(fresh, monkeypatch, tmp_path):
    fake = tmp_path / "fake-cc"
    fake.write_text("#!/bin/sh\necho 'fake-cc: error: no such target' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CC", str(fake))
    lib, why = cpu_build.load()
    assert lib is None and "do not build" in why and "fake-cc: error: no such target" in why
    assert not any(fresh.iterdir())  # the temporary outputs were removed


def test_the_kernels_can_be_switched_off(fresh, monkeypatch):
    monkeypatch.setenv("SKILLSOUP_CPU_KERNELS", "0")
    assert cpu_build.load() == (None, "SKILLSOUP_CPU_KERNELS is off")
    assert dispatch.resolve("auto", torch.device("cpu"))[0] == "ref"


def test_cpu_impl_is_refused_for_a_cuda_device():
    with pytest.raises(KernelUnavailableError, match="needs the model on the CPU"):
        dispatch.resolve("cpu", torch.device("cuda"))


@pytest.mark.slow
@pytest.mark.skipif(cpu_build.compiler() is None, reason="no C compiler")
def test_concurrent_builders_share_one_library_and_the_cache_is_reused(fresh, monkeypatch):
    script = textwrap.dedent("""
        from skillsoup.models import cpu_build
        lib, why = cpu_build.load()
        print("ok" if lib is not None else why)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=600)[0].strip() for p in procs]
    assert outputs == ["ok"] * 3
    built = sorted(p.name for p in fresh.iterdir())
    assert len(built) == 1 and built[0].endswith(".so")  # one whole library, no temporary files
    monkeypatch.setattr(cpu_build, "_compile", lambda *a: pytest.fail("the cached library was rebuilt"))
    cpu_build.reset()
    lib, why = cpu_build.load()
    assert lib is not None, why
