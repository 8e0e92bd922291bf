"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status.

The library's typed errors map to statuses in one place (:func:`from_library_error`): a skill or model
that does not exist is 404, a skill added over one with other content is 409, an option the library
rejects is 422, anything else the library raises is a 500 that still says what failed. Skill errors are
told in HTTP terms (which endpoint lists the skills, which body field replaces one), not with the
CLI's hints or the server's paths.
"""

from __future__ import annotations

from skillsoup.errors import (
    GenerationError,
    MixError,
    RoutingError,
    SkillConflictError,
    SkillFileError,
    SkillNotFoundError,
    SkillsoupError,
    UnknownSkillError,
)


class APIError(Exception):
    """An error answer: status, OpenAI error type and code, the message, and the request field."""

    def __init__(self, status: int, message: str, type: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def unauthorized() -> APIError:
    return APIError(401, "missing or wrong API key; send it as 'Authorization: Bearer KEY'", "authentication_error",
                    "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


def too_large(message: str, param: str | None = None) -> APIError:
    return APIError(413, message, code="request_too_large", param=param)


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    return APIError(422, message, code=code, param=param)


def busy(limit: int) -> APIError:
    return APIError(429, f"the server is busy ({limit} requests in flight, its limit); retry shortly",
                    "rate_limit_error", "server_busy", headers={"Retry-After": "1"})


def timed_out(message: str) -> APIError:
    return APIError(504, message, "timeout_error", "timeout")


def server_error(message: str) -> APIError:
    return APIError(500, message, "server_error", "server_error")


def model_not_found(model: str) -> APIError:
    message = f"the model {model!r} does not exist; GET /v1/models lists 'skillsoup' and 'skillsoup/<skill>'"
    return APIError(404, message, code="model_not_found", param="model")


def from_library_error(exc: SkillsoupError) -> APIError:
    if isinstance(exc, (UnknownSkillError, SkillNotFoundError)):
        names = ", ".join(map(repr, exc.names)) or "asked for"
        return APIError(404, f"no skill {names} on this server; GET /v1/skills (or /v1/models) lists them",
                        code="skill_not_found", param="skills")
    if isinstance(exc, SkillConflictError):
        names = ", ".join(map(repr, exc.names)) or "sent"
        return APIError(409, f"a skill {names} with other content is already on this server; send "
                             '"replace": true to overwrite it, or rename it', code="skill_exists", param="replace")
    if isinstance(exc, (RoutingError, MixError, GenerationError, SkillFileError)):
        return invalid(str(exc))
    return server_error(str(exc))
