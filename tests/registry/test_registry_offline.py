"""The default configuration (embedded Chroma, the packaged all-MiniLM-L6-v2 embedder) works offline:
``add`` and queries open no outbound connection, and the real embedder finds related texts."""

from __future__ import annotations

import ipaddress
import socket

import numpy as np
import pytest
from registry_helpers import write_skill_yaml

from skillsoup import embedding
from skillsoup.registry import SkillRegistry
from skillsoup.skills.skill import Demonstration, Skill

SKILLS = [
    Skill("arithmetic", "add two numbers", (Demonstration("what is 2 plus 3", "5"), Demonstration("12 + 30", "42"))),
    Skill("french", "translate English to French", (Demonstration("good morning", "bonjour"),
                                                    Demonstration("thank you", "merci"))),
]


@pytest.fixture(scope="session")
def real_embedder():
    return embedding.TextEmbedder()


def _local(address) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture
def no_outbound(monkeypatch):
    """Every connection to anything but loopback or a Unix socket fails and is recorded."""
    attempts = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_create, real_getaddrinfo = socket.create_connection, socket.getaddrinfo

    def guard(address):
        attempts.append(address)
        raise OSError(f"test forbids outbound connections ({address!r})")

    def connect(self, address):
        if self.family == socket.AF_UNIX or _local(address):
            return real_connect(self, address)
        guard(address)

    def connect_ex(self, address):
        if self.family == socket.AF_UNIX or _local(address):
            return real_connect_ex(self, address)
        guard(address)

    def create_connection(address, *args, **kwargs):
        if not _local(address):
            guard(address)
        return real_create(address, *args, **kwargs)

    def getaddrinfo(host, *args, **kwargs):  # a DNS lookup is already outbound traffic
        if host is not None and not _local((host.decode() if isinstance(host, bytes) else host, 0)):
            guard((host, args[0] if args else None))
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "create_connection", create_connection)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return attempts


def test_the_guard_catches_outbound_connections(no_outbound):
    with pytest.raises(OSError, match="forbids"):
        socket.create_connection(("192.0.2.1", 80), timeout=0.1)
    assert no_outbound


def test_real_embedder_gives_unit_vectors_of_related_texts(real_embedder):
    v = real_embedder.embed(["what is 7 plus 8", "add 4 and 9", "bonjour means good morning"])
    assert v.dtype == np.float32 and v.shape == (3, 384) and real_embedder.dim == 384
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > v[0] @ v[2]


def test_default_configuration_makes_no_outbound_connection(no_outbound, monkeypatch, tmp_path, tiny_model,
                                                            mamba_dir, capsys, real_embedder):
    monkeypatch.delenv("SKILLSOUP_EMBEDDER", raising=False)
    monkeypatch.setattr(embedding, "_MODELS", {})  # load the packaged model again, under the guard
    reg = SkillRegistry.open()  # default folder ($SKILLSOUP_HOME/registry), default embedder
    assert reg.embedder.name == "all-MiniLM-L6-v2"
    reg.add(SKILLS, tiny_model)
    top = reg.query_demonstrations(reg.embed_texts(["what is 7 plus 8"])[0], 2)
    assert [m.skill for m in top] == ["arithmetic", "arithmetic"]
    assert reg.query_skills(reg.embed_texts(["say hello in French"])[0], 1)[0].skill == "french"
    assert reg.state("french", tiny_model, recompute=False).fingerprint == tiny_model.fingerprint
    reg.close()

    from skillsoup.cli import main

    path = write_skill_yaml(tmp_path / "files", "upper")
    assert main(["add", str(path), "--model", str(mamba_dir)]) == 0
    assert main(["skills", "list", "--json"]) == 0
    assert '"upper"' in capsys.readouterr().out
    assert no_outbound == []
