"""Ray Serve: a local Ray cluster on 127.0.0.1, two replicas sharing one registry through a Chroma
server, 60 requests over 6 skills. Each skill's requests go to one replica (multiplexing keyed by the
routed top skill), and no request fails, also when a replica is killed mid-run."""

from __future__ import annotations

import random
import socket
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "registry"))
from serve_helpers import API_KEY  # noqa: E402
from synthetic import TOPICS, make_skills  # noqa: E402
from test_registry_chroma_server import chroma_url  # noqa: E402, F401  (the Chroma server fixture)

# a Ray cluster, a Chroma server and three Python workers: ~1-2 min on 2 cores; Ray's own models warn on import
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
ray = pytest.importorskip("ray")
SKILLS = list(TOPICS)[:6]
AUTH = {"Authorization": f"Bearer {API_KEY}"}


def _queries(n_per_skill: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.sample(TOPICS[s].split(), 3)) for _ in range(n_per_skill) for s in SKILLS]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_server(chroma_url, tmp_path_factory, tiny_model, mamba_dir):  # noqa: F811
    from ray import serve

    from skillsoup.registry import SkillRegistry
    from skillsoup.serve.protocol import Limits
    from skillsoup.serve.ray_app import APP_NAME, application
    from skillsoup.serve.server import ServeOptions

    registry = tmp_path_factory.mktemp("ray") / "reg"
    with SkillRegistry.open(registry, chroma_url=chroma_url, embedder="hash:256") as reg:
        reg.add([s for s in make_skills() if s.name in SKILLS], tiny_model)
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             logging_level="warning", log_to_driver=False)
    port = _free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        options = ServeOptions(model=str(mamba_dir), registry=registry, chroma_url=chroma_url, threads=1,
                               limits=Limits(max_tokens=3000), api_key=API_KEY, admin=True)
        serve.run(application(options, replicas=2, replica_cpus=1), name=APP_NAME, route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()
        ray.shutdown()


def _ask(client, query: str, max_tokens: int = 8) -> dict:
    reply = client.chat.completions.create(model="skillsoup", messages=[{"role": "user", "content": query}],
                                           max_tokens=max_tokens)
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == max_tokens
    return reply.skillsoup


def _replicas_by_skill(fields: list[dict]) -> dict[str, set[str]]:
    served = defaultdict(set)
    for field in fields:
        served[field["skills"][0]["name"] if field["skills"] else None].add(field["replica"])
    return served


def test_each_skill_stays_on_one_replica(ray_server):
    client = openai.OpenAI(base_url=ray_server + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
    assert httpx.get(ray_server + "/health").json()["backend"] == "ray"
    assert httpx.get(ray_server + "/v1/models").status_code == 401  # the key guards the front
    for query in _queries(1, seed=0):  # warm-up: each skill lands on the replica holding fewest skills
        _ask(client, query)
        time.sleep(0.5)  # the replica reports the skill it now holds to Serve's routers
    time.sleep(2)
    with ThreadPoolExecutor(6) as pool:
        fields = list(pool.map(lambda q: _ask(client, q), _queries(10, seed=1)))
    assert len(fields) == 60  # none failed
    served = _replicas_by_skill(fields)
    assert {name for name in served if name} >= set(SKILLS[:4])
    assert all(len(replicas) == 1 for replicas in served.values()), served
    assert len(set().union(*served.values())) == 2  # both replicas work
    metrics = httpx.get(ray_server + "/metrics", headers=AUTH).text
    assert "skillsoup_state_cache_hits_total" in metrics and 'status="200"' in metrics


def test_a_skill_added_over_http_is_captured_by_a_replica(ray_server):
    from skillsoup.skills import dump_skill_yaml

    skill = next(s for s in make_skills() if s.name not in SKILLS)
    added = httpx.post(ray_server + "/v1/skills", json={"format": "yaml", "content": dump_skill_yaml(skill)},
                       headers=AUTH, timeout=120)
    assert added.status_code == 200 and added.json()["data"][0]["status"] == "added"
    client = openai.OpenAI(base_url=ray_server + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
    reply = client.chat.completions.create(model=f"skillsoup/{skill.name}", max_tokens=4,
                                           messages=[{"role": "user", "content": "anything"}])
    assert reply.skillsoup["skills"][0]["name"] == skill.name and reply.usage.completion_tokens == 4


def test_no_request_is_lost_when_a_replica_dies(ray_server):
    client = openai.OpenAI(base_url=ray_server + "/v1", api_key=API_KEY, max_retries=0, timeout=120)
    queries = _queries(10, seed=2)
    done, fields, errors = threading.Semaphore(0), [], []

    def one(query):
        try:
            # long answers (seconds each), so that the kill finds requests in flight however fast the tiny
            # model decodes (1,000 tokens once left the victim idle in a full-suite CI run)
            fields.append(_ask(client, query, max_tokens=3000))
        except Exception as exc:  # collected: the assertion below shows them all
            errors.append(repr(exc))
        finally:
            done.release()

    # 12 requests in flight over 6 skills on 2 replicas; the one killed is the replica that answered
    # most of the last requests (a short answer on a tiny model leaves a replica idle between requests)
    with ThreadPoolExecutor(12) as pool:
        for query in queries:
            pool.submit(one, query)
        for _ in range(15):
            done.acquire()
        busiest = max(set(f["replica"] for f in fields[-8:]), key=[f["replica"] for f in fields[-8:]].count)
        victim = next(a for a in ray.util.list_named_actors(all_namespaces=True)
                      if "SkillSoupReplica" in a["name"] and busiest in a["name"])
        ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    assert errors == [] and len(fields) == 60
    retries = [line for line in httpx.get(ray_server + "/metrics", headers=AUTH).text.splitlines()
               if line.startswith("skillsoup_replica_retries_total")]
    assert retries and float(retries[0].split()[1]) >= 1, "requests in flight on the dead replica were sent again"
