"""A registry on a real Chroma server (``chroma run`` on 127.0.0.1, started here), shared by two
clients and by a second process. Skipped only when the ``chroma`` command is missing."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from registry_helpers import make_skill, run_python

from skillsoup.registry import RegistryLock, SkillRegistry

CLI = "import sys; from skillsoup.cli import main; sys.exit(main(sys.argv[1:]))"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chroma_url(tmp_path_factory):
    exe = shutil.which("chroma", path=str(Path(sys.executable).parent)) or shutil.which("chroma")
    if exe is None:
        pytest.skip("the chroma command is missing")
    folder = tmp_path_factory.mktemp("chroma-server")
    port = _free_port()
    log = open(folder / "server.log", "w")
    proc = subprocess.Popen([exe, "run", "--path", str(folder / "data"), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chroma run did not come up: {(folder / 'server.log').read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.slow  # starting the server takes ~10 s on the 2-core machine
def test_registry_on_a_chroma_server(chroma_url, tmp_path, tiny_model):
    with SkillRegistry.open(tmp_path / "a", chroma_url=chroma_url, embedder="hash:32") as reg:
        with RegistryLock(reg.path):  # the server serialises index writes: no file lock needed
            results = reg.add([make_skill("alpha"), make_skill("beta")], tiny_model)
        assert [r.status for r in results] == ["added", "added"]
        assert not (tmp_path / "a" / "chroma").exists()  # the index lives on the server
        assert list(reg.store.files())  # the states next to this client
        hit = reg.query_demonstrations(reg.embed_texts(["beta input 3"])[0], 1)[0]
        assert (hit.skill, hit.index) == ("beta", 3)
        assert reg.state("alpha", tiny_model, recompute=False).fingerprint == tiny_model.fingerprint

    # another client (another machine, say) sees the same skills; its missing states are recomputed
    with SkillRegistry.open(tmp_path / "b", chroma_url=chroma_url, embedder=None) as other:
        assert other.embedder.name == "hash:32" and other.names() == ["alpha", "beta"]
        assert other.state("beta", tiny_model).fingerprint == tiny_model.fingerprint
        assert [r.status for r in other.add([make_skill("alpha")], tiny_model)] == ["unchanged"]

    # and so does another process, through the CLI
    proc = run_python(["-c", CLI, "skills", "list", "--json", "--chroma-url", chroma_url,
                       "--registry", str(tmp_path / "c")])
    assert proc.returncode == 0, proc.stderr
    assert [s["name"] for s in json.loads(proc.stdout)] == ["alpha", "beta"]

    with SkillRegistry.open(tmp_path / "a", chroma_url=chroma_url) as reg:
        reg.remove("alpha")
        assert reg.names() == ["beta"]
        assert reg.doctor(tiny_model, repair=False).clean
        reg.remove("beta")


def test_unreachable_server_is_a_clear_error(tmp_path):
    from skillsoup.errors import RegistryError

    port = _free_port()  # nothing listens there
    with pytest.raises(RegistryError, match="Chroma server") as caught:
        SkillRegistry.open(tmp_path, chroma_url=f"http://127.0.0.1:{port}", embedder="hash:8")
    assert f"chroma run --path DIR --port {port}" in str(caught.value)
    assert "Could not connect" not in str(caught.value)  # chromadb's generic line is not repeated
    with pytest.raises(RegistryError, match=f"at http://127.0.0.1:{port};"):  # a bare HOST:PORT, read as http
        SkillRegistry.open(tmp_path, chroma_url=f"127.0.0.1:{port}", embedder="hash:8")
    with pytest.raises(RegistryError, match=rf"at http://\[::1\]:{port}\b"):  # IPv6 keeps its brackets
        SkillRegistry.open(tmp_path, chroma_url=f"http://[::1]:{port}", embedder="hash:8")
    with pytest.raises(RegistryError, match="HOST:PORT"):
        SkillRegistry.open(tmp_path, chroma_url="ftp://x", embedder="hash:8")
