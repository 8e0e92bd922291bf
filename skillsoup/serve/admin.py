"""Skills over HTTP: listing always (with the key, when one is set); adding and removing only when the
server runs with ``--admin``, which itself needs an API key.

    GET    /v1/skills                 {"object": "list", "data": [{"name", "description", "n_demos", "tags"}]}
    POST   /v1/skills                 {"format": "yaml" | "jsonl" | "md", "content": FILE TEXT, "replace": false}
    DELETE /v1/skills/{name}

A posted skill goes through the same parser and checks as a skill file (``skills.parse_skills``), and
is added like ``skillsoup add`` (its state captured by this server's model).
"""

from __future__ import annotations

import json

from fastapi import FastAPI, Request

from skillsoup.errors import SkillsoupError
from skillsoup.serve.errors import APIError, from_library_error, invalid
from skillsoup.serve.security import KeyGuard, read_body
from skillsoup.skills import parse_skills

MAX_SKILL_BODY = 4 << 20
FORMATS = ("yaml", "yml", "jsonl", "md")


def add_admin_routes(app: FastAPI, backend, guard: KeyGuard, admin: bool) -> None:
    def allowed(request: Request) -> None:
        guard.check(request)
        if not admin:
            raise APIError(403, "adding and removing skills over HTTP is off; start the server with --admin "
                                "(and an API key) to allow it", "permission_error", "admin_disabled")

    @app.get("/v1/skills")
    async def list_skills(request: Request):
        guard.check(request)
        infos = await backend.run_blocking(backend.soup.registry.list)
        return {"object": "list", "data": [{"name": i.name, "description": i.description, "n_demos": i.n_demos,
                                            "tags": list(i.tags), "composite": i.recipe is not None} for i in infos]}

    @app.post("/v1/skills")
    async def add_skills(request: Request):
        allowed(request)
        body = _json(await read_body(request, MAX_SKILL_BODY))
        fmt, content, replace = body.get("format", "yaml"), body.get("content"), body.get("replace", False)
        if fmt not in FORMATS or not isinstance(content, str) or not isinstance(replace, bool):
            raise invalid(f"send {{'format': one of {', '.join(FORMATS)}, 'content': the file's text, "
                          "'replace': true or false}")
        try:
            skills = parse_skills(content, fmt, source="<request>")
            results = await backend.add_skills(skills, replace)
        except SkillsoupError as exc:
            raise from_library_error(exc) from None
        return {"object": "list", "data": [{"name": r.name, "status": r.status, "n_demos": r.n_demos} for r in results]}

    @app.delete("/v1/skills/{name}")
    async def remove_skill(name: str, request: Request):
        allowed(request)
        try:
            users = await backend.remove_skill(name)
        except SkillsoupError as exc:
            raise from_library_error(exc) from None
        return {"name": name, "deleted": True, "composites_using_it": users}


def _json(body: bytes) -> dict:
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise invalid(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(value, dict):
        raise invalid("the body must be a JSON object")
    return value
