"""What the API layer shares between routes: reaching the running service, error rendering.

The :class:`~ringbridge.runtime.Runtime` is built by
:func:`ringbridge.assemble.assemble` and hung on ``app.state.runtime`` by the
lifespan in :mod:`ringbridge.api.app`; routes reach it through
:func:`runtime_of`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from ..errors import RingbridgeError, StoppingError
from ..runtime import Runtime


def runtime_of(app: FastAPI) -> Runtime:
    rt: Runtime | None = getattr(app.state, "runtime", None)
    if rt is None:
        raise StoppingError("the service is not running (starting up or shut down)")
    return rt


def error_payload(exc: RingbridgeError) -> dict[str, Any]:
    """``{"code", "message", "index"}``; ``index`` is the first bad sample or None."""
    index = getattr(exc, "index", -1)
    body: dict[str, Any] = {
        "code": exc.code,
        "message": exc.message,
        "index": index if isinstance(index, int) and index >= 0 else None,
    }
    return body


def error_response(exc: RingbridgeError, retry_after: int) -> Response:
    headers: dict[str, str] = {}
    if exc.status_hint == 503:
        headers["Retry-After"] = str(retry_after)
    if exc.status_hint == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="ringbridge"'
    return JSONResponse({"error": error_payload(exc)}, status_code=exc.status_hint, headers=headers)
