"""Run the service under uvicorn: ``run(settings)`` is what ``ringbridge serve`` calls.

One worker by design: the ring has exactly one producer (the pin dir's
producer lock would refuse a second process anyway). permessage-deflate is
off -- on binary sample frames it costs 60x in throughput (DESIGN §2b) --
and WebSocket frames may be somewhat larger than ``max_batch_bytes``
(``Settings.ws_frame_bytes``) so that an over-limit batch gets an error ack
instead of a dropped connection; frames beyond that are closed with 1009.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import socket

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from ..errors import ListenError, RingbridgeError
from ..logs import configure_logging
from ..settings import Settings
from .app import create_app
from .state import Runtime

log = logging.getLogger("ringbridge.server")

#: Exit status when the service could not start (uvicorn's own convention).
STARTUP_FAILURE = 3


def uvicorn_config(settings: Settings, app: FastAPI | None = None) -> uvicorn.Config:
    """The uvicorn configuration used by :func:`run` (and by the tests)."""
    return uvicorn.Config(
        app if app is not None else create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        lifespan="on",
        # Chosen explicitly, never "auto": a missing C parser or libuv loop
        # would otherwise fall back silently to h11 and the stdlib loop,
        # which halves HTTP throughput (bench/results.md).
        http="httptools",
        loop="uvloop",
        ws=RingbridgeWSProtocol,
        ws_per_message_deflate=False,
        ws_max_size=settings.ws_frame_bytes,
        # Our structured handler is installed by configure_logging().
        log_config=None,
        access_log=settings.access_log,
        # Longer than the producer's grace: see RingbridgeServer.
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace) + 2,
        server_header=False,
    )


class RingbridgeWSProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol with two bounds it lacks.

    - Pongs: uvicorn answers every ping at once into the transport's write
      buffer, so a client that pings without reading grows the server's
      memory without limit. While the transport is over its high-water mark
      (the peer is not reading) pings go unanswered; RFC 6455 §5.5.3 lets an
      endpoint answer only the most recent ping.
    - Shutdown: uvicorn closes every WebSocket at once, dropping the acks of
      batches already committed. Here an open stream is left to the app,
      which stops reading, writes those acks and closes with 1012 itself
      (``Runtime.streams.shutdown()``, started by :class:`RingbridgeServer`).
      uvicorn's graceful-shutdown timeout still bounds it.
    """

    def handle_ping(self) -> None:
        pong = b"".join(self.conn.data_to_send())
        if self.writable.is_set():
            self.transport.write(pong)
        else:
            self.pongs_dropped = getattr(self, "pongs_dropped", 0) + 1

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
