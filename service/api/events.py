"""``GET /v1/events?map=NAME``: a kernel ring buffer's events, to WebSocket and SSE subscribers.

One path, two protocols, chosen by the request itself: a WebSocket upgrade
gets a WebSocket, any other ``GET`` a Server-Sent Events stream (what
``curl -N`` and a browser's ``EventSource`` read). Both subscribe to the
event map (:mod:`ringbridge.events.hub`) for as long as the client stays:
every event the kernel publishes from then on, in order, each once.

- WebSocket, ``format=json`` (default): one text frame per event,
  ``{"seq", "value"}`` (typed) or ``{"seq", "data"}`` (base64);
  ``format=binary``: one binary frame per event, the u64 LE seq then the
  record's bytes (:func:`ringbridge.wire.binary_event`). Frames the client
  sends are ignored.
- SSE: one message per event, ``id: <seq>`` and ``data: <the JSON>``;
  ``format=binary`` is refused (422): SSE carries text. A comment line every
  :data:`ringbridge.wire.EVENTS_KEEPALIVE` seconds keeps idle proxies from
  closing the stream (and tells the client the server is there).
- A gap: the subscriber's buffer (``--event-buffer-events``/``-bytes``) was
  full, so it lost the newest events; it gets, where they would have been,
  one ``{"lost": N, "first_seq", "last_seq"}`` (a text frame; in SSE
  ``event: lost``). The kernel ring and the other subscribers never wait for it.

Refusals are the HTTP error answers of every route (a refused WebSocket
handshake too): 401/403 (the bearer token, as on ``/v1/stats``), 404
``not_found`` for a map not configured, 422 ``invalid_request`` for a bad
query, 503 ``stopping``. At shutdown each subscriber gets what its buffer
holds, then the stream ends (WebSocket close 1012).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request, WebSocket
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocketDisconnect

from .. import wire
from ..errors import (
    ConfigError,
    InvalidRequestError,
    NotFoundError,
    RingbridgeError,
    RingClosedError,
    StoppingError,
)
from ..events.hub import Event, Item, Subscription
from ..runtime import Runtime
from . import ingest
from .auth import check_token
from .openapi import EVENTS_ERRORS, EVENTS_OPERATION
from .state import runtime_of

log = logging.getLogger("ringbridge.events")
router = APIRouter()

KEEPALIVE = wire.EVENTS_KEEPALIVE
#: Items taken from a subscription for one write (SSE) or one loop pass (WebSocket).
BATCH = 256


class _Subscriber:
    """A subscription as the stream registry sees it: shutdown ends it."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub

    def stop_reading(self) -> None:
        self.sub.close()


def _subscribe(rt: Runtime, query: bytes) -> tuple[Subscription, wire.EventFormat]:
    name, fmt = wire.parse_events_query(query)
    if rt.streams.stopping:
        raise StoppingError("the service is stopping and takes no new subscribers")
    try:
        emap = rt.events.get(name)
    except ConfigError as exc:
        raise NotFoundError(
            f"{exc.message}; the service reads the maps given with --event-map NAME[=TYPE] "
            "or --event-pin PATH[=TYPE]"
        ) from None
    sub = emap.subscribe(
        max_events=rt.settings.event_buffer_events, max_bytes=rt.settings.event_buffer_bytes
    )
    return sub, fmt


def _ready(sub: Subscription, first: Item | None = None) -> list[Item]:
    """What the subscription holds now (up to :data:`BATCH` items)."""
    items = [] if first is None else [first]
    while len(items) < BATCH:
        try:
            items.append(sub.get_nowait())
        except (asyncio.QueueEmpty, RingClosedError):
            break
    return items


async def _pump(
    sub: Subscription,
    gone: asyncio.Future[None],
    send: Callable[[list[Item]], Awaitable[None]],
    idle: Callable[[], Awaitable[None]] | None = None,
) -> bool:
    """Hands the subscription's items to ``send`` in order; True when the subscription
    ended (shutdown), False when the client left (``gone``)."""
    while not gone.done():
        items = _ready(sub)
        if not items:
            getter = asyncio.ensure_future(sub.get())
            waiting: set[asyncio.Future[Any]] = {getter, gone}
            done, _ = await asyncio.wait(
                waiting, timeout=KEEPALIVE, return_when=asyncio.FIRST_COMPLETED
            )
            if getter not in done:
                getter.cancel()
                with contextlib.suppress(asyncio.CancelledError, RingClosedError):
                    await getter
                if not gone.done() and idle is not None:
                    await idle()
                continue
            try:
                items = _ready(sub, getter.result())
            except RingClosedError:
                return True
        await send(items)
    return False


def _until_done(sub: _Subscriber, rt: Runtime) -> Callable[[], None]:
    rt.streams.add(sub)

    def done() -> None:
        sub.sub.close()
        rt.streams.discard(sub)

    return done


# -- Server-Sent Events -----------------------------------------------------------


def _sse(items: list[Item]) -> bytes:
    return b"".join(
        wire.sse_message(i.encoded(), seq=i.seq)
        if isinstance(i, Event)
        else wire.sse_message(i.encoded(), event="lost")
        for i in items
    )


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


class _EventStream(Response):
    """The SSE answer, at the ASGI level: it must see the client leave while idle."""

    media_type = "text/event-stream"

    def __init__(self, rt: Runtime, sub: Subscription) -> None:
        super().__init__()
        self._rt = rt
        self._sub = sub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sub = self._sub
        finish = _until_done(_Subscriber(sub), self._rt)
        gone = asyncio.ensure_future(_disconnect(receive))
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [
                        (b"content-type", b"text/event-stream; charset=utf-8"),
                        (b"cache-control", b"no-cache"),
                        # nginx: pass each message on as it comes.
                        (b"x-accel-buffering", b"no"),
                    ],
                }
            )

            async def body(chunk: bytes) -> None:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})

            head = f": ringbridge events map={sub.name}\n\n".encode()
            await body(head)
            ended = await _pump(
                sub, gone, lambda items: body(_sse(items)), lambda: body(b": keep-alive\n\n")
            )
            if ended:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client left while we wrote
        finally:
            gone.cancel()
            finish()


@router.get(
    wire.EVENTS_PATH,
    summary="Server-Sent Events of a kernel ring buffer (--event-map); "
    "a WebSocket upgrade on the same path streams them as frames",
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": 'one message per event: `id: <seq>`, `data: {"seq", "value"}` '
            '(typed) or `{"seq", "data"}` (base64); a gap is `event: lost`, '
            '`data: {"lost", "first_seq", "last_seq"}`',
        },
        **EVENTS_ERRORS,
    },
    openapi_extra=EVENTS_OPERATION,
    response_class=Response,
)
async def events_sse(request: Request) -> Response:
    rt = runtime_of(request.app)
    check_token(request, rt.settings.token)
    query = request.scope.get("query_string", b"")
    if wire.parse_events_query(query)[1] == "binary":
        raise InvalidRequestError(
            "query.format: binary events need the WebSocket (Server-Sent Events carry text)"
        )
    sub, _ = _subscribe(rt, query)
    return _EventStream(rt, sub)


# -- WebSocket --------------------------------------------------------------------


async def _ws_disconnect(ws: WebSocket) -> None:
    while (await ws.receive())["type"] != "websocket.disconnect":
        pass  # frames from a subscriber mean nothing here


@router.websocket(wire.EVENTS_PATH)
async def events_ws(ws: WebSocket) -> None:
    try:
        rt = runtime_of(ws.app)
        check_token(ws, rt.settings.token)
        sub, fmt = _subscribe(rt, ws.scope.get("query_string", b""))
    except RingbridgeError as exc:
        await ws.send_denial_response(
            ingest.error_response(exc, int(ws.app.state.settings.retry_after))
        )
        return
    finish = _until_done(_Subscriber(sub), rt)
    gone: asyncio.Future[None] | None = None
    try:
        await ws.accept()
        gone = asyncio.ensure_future(_ws_disconnect(ws))

        async def send(items: list[Item]) -> None:
            for i in items:
                if fmt == "binary" and isinstance(i, Event):
                    await ws.send_bytes(wire.binary_event(i.seq, i.data))
                else:
                    await ws.send_text(i.encoded().decode())

        if await _pump(sub, gone, send):
            close = wire.rule(StoppingError.code).close
            await ws.close(close, "server stopping")
    except (WebSocketDisconnect, OSError):
        pass
    except Exception:
        if not (gone is not None and gone.done()):
            log.exception("event stream failed", extra={"map": sub.name})
    finally:
        if gone is not None:
            gone.cancel()
        finish()
