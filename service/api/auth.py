"""Bearer-token authentication for the ingestion routes (HTTP and WebSocket).

With ``settings.token`` unset, everything is open (the default on loopback;
settings refuse a non-loopback listener without a token unless told
otherwise). With a token, ``POST /v1/samples``, ``GET /v1/stats``,
``WS /v1/stream`` and ``GET``/``WS /v1/events`` need ``Authorization: Bearer <token>``: a missing or
malformed header is 401, a wrong token 403. ``/healthz``, ``/readyz`` and
``/metrics`` stay open by default: probes and Prometheus scrapers rarely
carry credentials, and those routes neither write nor reveal sample data.
``protect_metrics`` puts ``/metrics``, ``/docs`` and ``/openapi.json`` behind
the token too (Prometheus sends it with ``authorization: {credentials: ...}``).
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request
from starlette.requests import HTTPConnection

from ..errors import ForbiddenError, UnauthorizedError
from .state import runtime_of


def check_token(conn: HTTPConnection, token: str | None) -> None:
    """Raise 401/403 unless ``conn`` carries ``token`` (no-op when ``token`` is None)."""
    if token is not None:
        check_authorization(conn.headers.get("authorization"), token)


def check_authorization(header: str | None, token: str | None) -> None:
    """Raise 401/403 unless the ``Authorization`` header value carries ``token``."""
    if token is None:
        return
    if header is None:
        raise UnauthorizedError("missing Authorization: Bearer <token> header")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise UnauthorizedError("Authorization header must be 'Bearer <token>'")
    if not hmac.compare_digest(_digest(given.strip()), _digest(token)):
        raise ForbiddenError("invalid token")


def _digest(text: str) -> bytes:
    """SHA-256 of ``text``: what the tokens are compared by.

    ``compare_digest`` takes time independent of where two inputs differ,
    but returns at once when their lengths differ, which tells a guesser the
    token's length. Digests all have 32 bytes. (Settings keep the token to
    printable ASCII; a header's characters are Latin-1, hence surrogatepass
    only to never raise on anything.)
    """
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


async def require_token(request: Request) -> None:
    """FastAPI dependency for the protected HTTP routes."""
    check_token(request, runtime_of(request.app).settings.token)


async def require_token_if_protected(request: Request) -> None:
    """Dependency of ``/metrics`` and the docs: the token only with ``protect_metrics``.

    Reads the app's settings, not the runtime: these routes answer while the
    service starts or stops too.
    """
    settings = request.app.state.settings
    if settings.protect_metrics:
        check_token(request, settings.token)
