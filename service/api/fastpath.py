"""``POST /v1/samples`` as a raw ASGI handler, ahead of FastAPI's routing.

Measured under load, FastAPI's per-request machinery (route matching over
the included routers, the middleware stack, dependency solving for ``wait``
and ``timeout``, the Request object) cost more than the ingestion itself on
small batches. :class:`RingbridgeApp` is the FastAPI app with one exception
in its ``__call__``: a ``POST`` to exactly ``/v1/samples`` goes straight to
:func:`post_samples`, which runs the same steps as the FastAPI route
(:func:`ringbridge.api.ingest.ingest_http`) with the same checks and the same
answers -- bearer token (401/403), query parameters (422
``invalid_request``), error bodies and headers, rejection counts. Everything
else, and the OpenAPI description of this route, stays FastAPI's.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi import FastAPI

from ..errors import InvalidRequestError, RingbridgeError, StoppingError
from ..producer.task import WaitFor
from ..runtime import Runtime
from . import ingest
from .auth import check_authorization
from .state import error_response

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PATH = "/v1/samples"
_JSON = (b"content-type", b"application/json")


def parse_query(query: bytes) -> tuple[WaitFor, float | None]:
    """``wait`` and ``timeout`` of the query string, checked as the route declares them."""
    wait: WaitFor = "committed"
    timeout: float | None = None
    if not query:
        return wait, timeout
    for key, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if key == "wait":
            if value == "committed":
                wait = "committed"
            elif value == "consumed":
                wait = "consumed"
            else:
                raise InvalidRequestError(
                    f"query.wait: Input should be 'committed' or 'consumed', got {value!r}"
                )
        elif key == "timeout":
            try:
                t = float(value)
            except ValueError:
                raise InvalidRequestError(
                    f"query.timeout: Input should be a valid number, got {value!r}"
                ) from None
            if not t > 0 or not math.isfinite(t):
                raise InvalidRequestError(
                    f"query.timeout: Input should be a finite number greater than 0, got {value!r}"
                )
            timeout = t
    return wait, timeout


async def post_samples(app: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
    rt: Runtime | None = app.state.runtime
    try:
        if rt is None:
            raise StoppingError("the service is not running (starting up or shut down)")
        content_type = content_length = authorization = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        check_authorization(authorization, rt.settings.token)
        wait, timeout = parse_query(scope.get("query_string", b""))
        ack = await ingest.ingest_http(rt, content_type, content_length, receive, wait, timeout)
    except RingbridgeError as exc:
        if rt is not None:
            rt.rejections.add(exc.code)
        retry = rt.settings.retry_after if rt is not None else 1
        await error_response(exc, retry)(scope, receive, send)
        return
    body = ingest.ack_json(ack)
    await send(
        {
            "type": "http.response.start",
            "status": ingest.ack_status(ack, wait),
            "headers": [_JSON, (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RingbridgeApp(FastAPI):
    """FastAPI, with ``POST /v1/samples`` served by :func:`post_samples` directly."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] == PATH
            and scope["method"] == "POST"
            and not scope.get("root_path")
        ):
            await post_samples(self, scope, receive, send)
            return
        await super().__call__(scope, receive, send)
