"""Safe by default: where the server may listen, the bearer key check, and a bounded body read.

    check_bind(host, api_key, admin)   a public address or --admin needs an API key
    KeyGuard(api_key).check(request)   'Authorization: Bearer KEY', compared in constant time
    await read_body(request, limit)    the body, or 413 as soon as it passes the limit
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from skillsoup.errors import ServeError
from skillsoup.serve.errors import invalid, too_large, unauthorized

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, api_key: str | None, admin: bool) -> None:
    """Raise ServeError for an unsafe start: listening beyond this machine, or taking skill edits
    over HTTP, without an API key."""
    if api_key is not None and not api_key.strip():
        raise ServeError("the API key is empty; give a real one with --api-key or $SKILLSOUP_API_KEY")
    if not is_loopback(host) and not api_key:
        raise ServeError(
            f"refusing to listen on {host} without an API key: anyone who reaches it could use the model; set "
            "$SKILLSOUP_API_KEY (or --api-key), or keep the default --host 127.0.0.1"
        )
    if admin and not api_key:
        raise ServeError("--admin lets HTTP clients add and remove skills, so it needs an API key ($SKILLSOUP_API_KEY)")


class KeyGuard:
    """The bearer check. Both sides are hashed first, so the comparison takes the same time whatever
    the key's length and wherever the first wrong byte is."""

    def __init__(self, api_key: str | None):
        self._digest = hashlib.sha256(api_key.encode()).digest() if api_key else None

    @property
    def enabled(self) -> bool:
        return self._digest is not None

    def check(self, request) -> None:
        if self._digest is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        given = hashlib.sha256(token.strip().encode()).digest()
        ok = hmac.compare_digest(given, self._digest)
        if not (ok and scheme.lower() == "bearer"):
            raise unauthorized()


async def read_body(request, limit: int) -> bytes:
    """The request body, refused with 413 once it passes ``limit`` bytes (by its Content-Length
    before reading, or while reading a chunked body)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise invalid("Content-Length is not a number", code="invalid_header") from None
        if size > limit:
            raise too_large(f"the body has {size:,} bytes; this server takes at most {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(f"the body passed {limit:,} bytes, the most this server takes")
        chunks.append(chunk)
    return b"".join(chunks)
