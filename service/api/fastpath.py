"""``POST /v1/samples``: its one handler, as raw ASGI, ahead of FastAPI's routing.

Measured under load, FastAPI's per-request machinery (route matching over
the included routers, the middleware stack, dependency solving, the Request
object) cost more than the ingestion itself on small batches.
:class:`RingbridgeApp` is the FastAPI app with one exception in its
``__call__``: a ``POST`` to exactly ``/v1/samples`` goes straight to
:func:`post_samples`. The FastAPI route of the same path
(:mod:`ringbridge.api.routes`) only documents it for OpenAPI, and hands
over to :func:`post_samples` when it is reached (under a ``root_path``).
Everything else stays FastAPI's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI

from .. import wire
from ..errors import RingbridgeError
from . import ingest
from .auth import check_authorization
from .state import runtime_of

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PATH = "/v1/samples"
_JSON = (b"content-type", ingest.JSON.encode())


async def post_samples(app: FastAPI, scope: Scope, receive: Receive, send: Send) -> None:
    """One ``POST /v1/samples``: token, query, then :func:`ingest.ingest_http`; its answer."""
    try:
        rt = runtime_of(app)
        content_type = content_length = authorization = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                content_length = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
        check_authorization(authorization, rt.settings.token)
        wait, timeout = wire.parse_query(scope.get("query_string", b""))
        ack = await ingest.ingest_http(rt, content_type, content_length, receive, wait, timeout)
    except RingbridgeError as exc:
        await ingest.refuse(app, exc)(scope, receive, send)
        return
    body = wire.ack_json(ack)
    await send(
        {
            "type": "http.response.start",
            "status": wire.ack_status(ack, wait),
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
