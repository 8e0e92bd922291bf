"""Skills over HTTP: listed always, added and removed only with --admin and the key."""

from __future__ import annotations

import httpx
import pytest
from serve_helpers import API_KEY, copy_registry, serve_soup, stop

SKILL = """\
name: shout-date
description: write a date in upper-case words
template: "Date: {input}\\nWords: {output}\\n"
demonstrations:
- input: "2023-11-05"
  output: NOVEMBER FIFTH
- input: "2024-01-02"
  output: JANUARY SECOND
- input: "2022-03-04"
  output: MARCH FOURTH
"""
AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def admin_server(tmp_path, demo_registry_template, demo_model):
    served = serve_soup(copy_registry(demo_registry_template, tmp_path / "reg"), demo_model, api_key=API_KEY,
                        admin=True)
    yield served
    stop(served)


def test_without_admin_skills_are_listed_but_not_changed(demo_server):
    listed = httpx.get(demo_server.url + "/v1/skills").json()
    assert "date-us" in [s["name"] for s in listed["data"]]
    added = httpx.post(demo_server.url + "/v1/skills", json={"format": "yaml", "content": SKILL})
    assert added.status_code == 403 and added.json()["error"]["code"] == "admin_disabled"
    assert httpx.delete(demo_server.url + "/v1/skills/date-us").status_code == 403
    assert "date-us" in [s["name"] for s in httpx.get(demo_server.url + "/v1/skills").json()["data"]]


def test_with_admin_and_the_key_skills_are_added_used_and_removed(admin_server):
    url = admin_server.url
    assert httpx.post(url + "/v1/skills", json={"format": "yaml", "content": SKILL}).status_code == 401
    added = httpx.post(url + "/v1/skills", json={"format": "yaml", "content": SKILL}, headers=AUTH, timeout=120)
    assert added.status_code == 200 and added.json()["data"][0] == {"name": "shout-date", "status": "added", "n_demos": 3}
    client = admin_server.client(api_key=API_KEY)
    assert "skillsoup/shout-date" in [m.id for m in client.models.list()]
    reply = client.chat.completions.create(model="skillsoup/shout-date", messages=[{"role": "user", "content": "2021-07-09"}])
    assert reply.skillsoup["skills"][0]["name"] == "shout-date"
    bad = httpx.post(url + "/v1/skills", json={"format": "yaml", "content": "name: [oops"}, headers=AUTH)
    assert bad.status_code == 422 and "<request>" in bad.json()["error"]["message"]
    changed = {"format": "yaml", "content": SKILL.replace("MARCH FOURTH", "MARCH THE FOURTH")}
    clash = httpx.post(url + "/v1/skills", json=changed, headers=AUTH, timeout=120)  # a client error, named in HTTP terms
    error = clash.json()["error"]
    assert clash.status_code == 409 and error["code"] == "skill_exists" and '"replace": true' in error["message"]
    assert "--replace" not in error["message"] and "shout-date" in error["message"]
    assert "skillsoup/shout-date" in [m.id for m in client.models.list()]  # the stored one is untouched
    replaced = httpx.post(url + "/v1/skills", json=changed | {"replace": True}, headers=AUTH, timeout=120)
    assert replaced.status_code == 200 and replaced.json()["data"][0]["status"] == "replaced"
    assert httpx.delete(url + "/v1/skills/shout-date", headers=AUTH).json()["deleted"] is True
    assert "skillsoup/shout-date" not in [m.id for m in client.models.list()]
    gone = httpx.delete(url + "/v1/skills/shout-date", headers=AUTH)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "skill_not_found"
    message = gone.json()["error"]["message"]  # says where to look, not where the server keeps its files
    assert "/v1/skills" in message and str(admin_server.soup.registry.path) not in message
