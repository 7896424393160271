"""Run the service under uvicorn: ``run(settings)`` is what ``ringbridge serve`` calls.

One worker by design: the ring has exactly one producer (the pin dir's
producer lock would refuse a second process anyway). permessage-deflate is
off -- on binary sample frames it costs 60x in throughput (measured: 438 vs
27,000 64 KiB frames/s) -- and WebSocket frames may be somewhat larger than
``max_batch_bytes`` (``Settings.ws_frame_bytes``) so that an over-limit batch
gets an error ack instead of a dropped connection; frames beyond that are
closed with 1009.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import socket
from collections import deque
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

from ..errors import ListenError, RingbridgeError
from ..logs import configure_logging
from ..runtime import Runtime
from ..settings import Settings
from .app import create_app
from .dataplane import DataPlaneProtocol

log = logging.getLogger("ringbridge.server")

#: Exit status when the service could not start (uvicorn's own convention).
STARTUP_FAILURE = 3


def uvicorn_config(settings: Settings, app: FastAPI | None = None) -> uvicorn.Config:
    """The uvicorn configuration used by :func:`run` (and by the tests)."""
    app = app if app is not None else create_app(settings)
    # The data plane serves POST /v1/samples and WS /v1/stream itself and
    # hands every other request to uvicorn's own protocols (api/dataplane).
    protocol: Any = DataPlaneProtocol.bound(app)  # an asyncio.BufferedProtocol
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        lifespan="on",
        # Chosen explicitly, never "auto": a missing C parser or libuv loop
        # would otherwise fall back silently to h11 and the stdlib loop,
        # which halves HTTP throughput (bench/results.md).
        http=protocol,
        loop="uvloop",
        ws=protocol,
        ws_per_message_deflate=False,
        ws_max_size=settings.ws_frame_bytes,
        # Our structured handler is installed by configure_logging().
        log_config=None,
        access_log=settings.access_log,
        # Longer than the producer's grace: see RingbridgeServer.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace) + 2,
        server_header=False,
    )


class _BodyChunks:
    """A request body as the chunks the socket delivered, joined once.

    Stands in for uvicorn's ``bytearray`` body buffer: ``+=`` keeps a
    reference instead of copying, and ``bytes()`` (which uvicorn calls to
    hand the body to the app) joins the chunks once -- or, for a body that
    arrived in one chunk, returns that chunk itself, with no copy at all.
    """

    __slots__ = ("_chunks", "_size")

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0

    def __iadd__(self, chunk: bytes) -> _BodyChunks:
        self._chunks.append(chunk)
        self._size += len(chunk)
        return self

    def __len__(self) -> int:
        return self._size

    def __bytes__(self) -> bytes:
        chunks = self._chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class _FirstWriteJoined:
    """A response's transport that sends its status line and headers with the body.

    uvicorn writes a response's head (on ``http.response.start``) and its
    body (on ``http.response.body``) with two transport writes, which uvloop
    turns into two ``send(2)`` calls: a third of the server's time on small
    answers. The first write is held until the next one (the body; joined
    when small) or, at the latest, the end of this event-loop pass; every
    later write, and ``close()``, goes through after it, so the bytes keep
    their order.
    """

    __slots__ = ("_held", "_loop", "_transport", "_used")

    #: Bodies up to this size are joined to the held head (one copy of a few
    #: KiB); larger ones are written after it, without the copy.
    JOIN_BYTES = 16 * 1024

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None
        self._used = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._used:
            self._used = True
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
            return
        held = self._held
        if held is not None:
            self._held = None
            if len(data) <= self.JOIN_BYTES:
                self._transport.write(held + bytes(data))
                return
            self._transport.write(held)
        self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class RingbridgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with two copies and a syscall fewer.

    - Bodies: uvicorn appends every chunk to a ``bytearray`` and copies it
      out again for the app; on 256 KiB sample batches those copies were a
      fifth of the server's time. Flow control is unchanged: reading pauses
      once a body's unread bytes pass uvicorn's high-water mark, until the
      app asks for them.
    - Responses: head and body leave in one write (:class:`_FirstWriteJoined`).
    """

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        cycle = self.cycle
        transport: object = cycle.transport if cycle is not None else None
        if cycle is not None and not isinstance(transport, _FirstWriteJoined):
            cycle.transport = _FirstWriteJoined(cycle.transport, self.loop)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        current: object = cycle.body
        if not isinstance(current, _BodyChunks):
            chunks = _BodyChunks()
            if current:
                chunks += bytes(cycle.body)
            cycle.body = chunks  # type: ignore[assignment]
        super().on_body(body)


#: Unsent bytes above which a ping gets no pong (the peer is not reading).
PONG_BUFFER_LIMIT = 64 * 1024
#: First byte of a server's pong frame (FIN, opcode 0xA, unmasked).
_PONG_HEAD = b"\x8a"


class RingbridgeWSProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with two bounds it lacks, read
    ahead within one frame buffer, and acks written once per loop pass.

    - Pongs: uvicorn answers every ping at once into the transport's write
      buffer, so a client that pings without reading grows the server's
      memory without limit. While more than ``PONG_BUFFER_LIMIT`` bytes wait
      in the transport (the peer is not reading) pings go unanswered; RFC
      6455 §5.5.3 lets an endpoint answer only the most recent ping.
    - Shutdown: uvicorn closes every WebSocket at once, dropping the acks of
      batches already committed. Here an open stream is left to the app,
      which stops reading, writes those acks and closes with 1012 itself
      (``Runtime.streams.shutdown()``, started by :class:`RingbridgeServer`).
      uvicorn's graceful-shutdown timeout still bounds it.
    """

    _flush_scheduled = False
    _queued: deque[int] | None = None
    _queued_bytes = 0

    def send_receive_event_to_app(self) -> None:
        """Keep reading while the frames waiting for the app fit one frame buffer.

        uvicorn stops reading the socket after every message until the app
        has taken it: one frame per read pause/resume round, which capped a
        pipelining client at a fraction of what the app processes. Here the
        socket stays read until the messages queued for the app reach
        ``ws_max_size`` bytes -- the one frame buffer admission charged
        this connection for -- so memory stays bounded as before.
        """
        if self._queued is None:
            self._queued = deque()
        size = sum(len(f) for f in self.frames)
        was_paused = self.read_paused
        before = self.queue.qsize()
        super().send_receive_event_to_app()
        if self.queue.qsize() == before:
            return  # discarded (past close) or refused (bad UTF-8)
        self._queued.append(size)
        self._queued_bytes += size
        if (
            not was_paused
            and self.read_paused
            and self._queued_bytes < self.config.ws_max_size
            and not self.transport.is_closing()
        ):
            self.read_paused = False
            self.transport.resume_reading()

    async def receive(self) -> ASGIReceiveEvent:
        message = await super().receive()
        if message["type"] == "websocket.receive" and self._queued:
            self._queued_bytes -= self._queued.popleft()
        return message

    async def send(self, message: ASGISendEvent) -> None:
        """Data frames go out once per event-loop pass, not one write each.

        A stream's writer sends one ack per batch; under load many are ready
        at once, and a transport write (a syscall) per ack cost more than
        the acks themselves. The frames are encoded now, in order, into the
        connection's output buffer and written together when this loop pass
        ends; any other frame (a close, a pong) written before then takes
        them along first, so the order on the wire never changes.
        """
        if message["type"] != "websocket.send" or not self.handshake_complete:
            await super().send(message)
            return
        await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        if self.close_sent or self.initial_response is not None:
            await super().send(message)  # uvicorn's own error for a send after close
            return
        try:
            data = message.get("bytes")
            text = message.get("text")
            if data is not None:
                self.conn.send_binary(data)
            elif text is not None:
                self.conn.send_text(text.encode())
        except InvalidState:
            raise ClientDisconnected() from None
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        output = self.conn.data_to_send()
        if output and not self.transport.is_closing():
            self.transport.write(b"".join(output))

    pongs_dropped = 0

    def handle_ping(self) -> None:
        # The protocol queued the pong behind whatever was already waiting
        # (acks batched by send()): one serialized frame per chunk. Only
        # pongs may be dropped, never another frame.
        out = self.conn.data_to_send()
        if self.transport.get_write_buffer_size() > PONG_BUFFER_LIMIT:
            kept = [chunk for chunk in out if chunk[:1] != _PONG_HEAD]
            self.pongs_dropped += len(out) - len(kept)
            out = kept
        if out:
            self.transport.write(b"".join(out))

    def shutdown(self) -> None:
        if self.handshake_complete and not self.close_sent and not self.transport.is_closing():
            return  # the app finishes its acks and closes (see the class docstring)
        super().shutdown()


class RingbridgeServer(uvicorn.Server):
    """uvicorn's server, telling the producer as soon as shutdown begins.

    uvicorn's order is: stop listening, close idle connections and
    WebSockets, wait up to ``timeout_graceful_shutdown`` for requests in
    flight, *cancel* the rest, then run the lifespan exit. A request waiting
    for ring space would be cancelled (a 500 for its client) before the
    lifespan could stop the producer. So the producer's stop starts with the
    shutdown: new batches get 503 ``stopping`` at once, queued ones get
    ``shutdown_grace`` seconds to commit and then a 503 -- all answered
    before uvicorn's own, longer, grace ends. The lifespan's stop is then a
    no-op wait (``Producer.stop`` is idempotent).
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app
        self._stopping: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and sockets:
            # uvicorn announces only the sockets it bound itself; say where we
            # listen in the same words (scripts and the test launcher read it).
            host, port = sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            logging.getLogger("uvicorn.error").info(
                "Uvicorn running on http://%s:%d (Press CTRL+C to quit)", shown, port
            )

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        rt = getattr(self._app.state, "runtime", None)
        if isinstance(rt, Runtime) and self._stopping is None:
            self._stopping = asyncio.create_task(
                rt.producer.stop(rt.settings.shutdown_grace), name="ringbridge-stop"
            )
            rt.streams.shutdown()
        await super().shutdown(sockets)


def make_server(settings: Settings, app: FastAPI | None = None) -> RingbridgeServer:
    """The server :func:`run` serves with (the tests run the same one in a thread)."""
    app = app if app is not None else create_app(settings)
    return RingbridgeServer(uvicorn_config(settings, app), app)


class _KnownStartupFailure(logging.Filter):
    """Drops uvicorn's traceback of a startup failure the lifespan already explained.

    A failed lifespan startup reaches uvicorn as the whole traceback text. For
    our own errors (a held pin dir, a mismatched ring) the lifespan has logged
    one structured line with the reason; the traceback would bury it. Other
    failures, and everything at debug level, keep their traceback.
    """

    def __init__(self, app: FastAPI) -> None:
        super().__init__()
        self._app = app

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(self._app.state, "startup_error", None) is None:
            return True
        return not str(record.msg).startswith("Traceback") or log.isEnabledFor(logging.DEBUG)


_LISTEN_HINTS = {
    errno.EADDRINUSE: "another process listens there (another ringbridge?): stop it or "
    "choose another --port",
    errno.EADDRNOTAVAIL: "no local interface has that address: check --host",
    errno.EACCES: "ports below 1024 need CAP_NET_BIND_SERVICE: choose a port >= 1024",
}


def bind(settings: Settings) -> socket.socket:
    """The listening socket, bound before anything is loaded or pinned.

    Binding first means a start that cannot listen (port in use) fails before
    it creates pins, maps a ring or arms a timer.
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))
    except OSError as exc:
        sock.close()
        hint = _LISTEN_HINTS.get(exc.errno or 0, "")
        raise ListenError(
            f"cannot listen on {settings.host}:{settings.port}: "
            f"{exc.strerror or exc}{'; ' + hint if hint else ''}"
        ) from exc
    except BaseException:
        sock.close()
        raise
    return sock


def run(settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit status."""
    configure_logging(settings.log_level, json_lines=settings.log_json)
    try:
        sock = bind(settings)
    except RingbridgeError as exc:
        log.error("startup failed", extra={"error": exc.message, "code": exc.code})
        return STARTUP_FAILURE
    try:
        server = make_server(settings)
    except RingbridgeError as exc:
        sock.close()
        log.error("cannot start", extra={"error": exc.message, "code": exc.code})
        return STARTUP_FAILURE
    quiet = _KnownStartupFailure(server._app)
    logging.getLogger("uvicorn.error").addFilter(quiet)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        logging.getLogger("uvicorn.error").removeFilter(quiet)
    # uvicorn returns normally also when the lifespan startup failed (it has
    # logged why); `started` tells the two apart.
    return 0 if server.started else STARTUP_FAILURE
