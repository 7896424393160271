"""Run the service under uvicorn: ``run(settings)`` is what ``ringbridge serve`` calls.

One worker by design: the ring has exactly one producer (the pin dir's
producer lock would refuse a second process anyway). uvicorn runs the data
plane's protocol (:mod:`ringbridge.api.dataplane`: ``POST /v1/samples`` and
``WS /v1/stream``), which hands every other request to uvicorn's own,
unmodified protocols: none of uvicorn's private classes is subclassed here.
permessage-deflate is never negotiated -- on binary sample frames it costs
60x in throughput (measured: 438 vs 27,000 64 KiB frames/s) -- and
WebSocket frames may be somewhat larger than ``max_batch_bytes``
(``Settings.ws_frame_bytes``) so that an over-limit batch gets an error ack
instead of a dropped connection; frames beyond that are closed with 1009.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import math
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn
from fastapi import FastAPI

from ..errors import ListenError, RingbridgeError
from ..logs import configure_logging
from ..runtime import Runtime
from ..settings import Settings
from . import connguard
from .app import create_app
from .dataplane import DataPlaneProtocol

log = logging.getLogger("ringbridge.server")

#: Exit status when the service could not start (uvicorn's own convention).
STARTUP_FAILURE = 3


def uvicorn_config(settings: Settings, app: FastAPI | None = None) -> uvicorn.Config:
    """The uvicorn configuration used by :func:`run` (and by the tests)."""
    app = app if app is not None else create_app(settings)
    # The data plane serves POST /v1/samples and WS /v1/stream itself and
    # hands every other request to uvicorn's own protocols (api/dataplane):
    # HTTP under the connection guard, WebSocket upgrades as they are. It is
    # also the WebSocket protocol uvicorn's HTTP protocol upgrades to, so that
    # /v1/stream on a connection handed over earlier is the data plane's too.
    protocol: Any = DataPlaneProtocol.bound(app, fallback=connguard.GuardedHttpProtocol)
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
        # Queued connections are accepted (fds) before the first is looked
        # at: the backlog is part of the fd budget (api/connguard.py).
        backlog=connguard.backlog_for(connguard.fd_limit()),
    )


class RingbridgeServer(uvicorn.Server):
    """uvicorn's server, telling the producer as soon as shutdown begins.

    uvicorn's order is: stop listening, close idle connections and
    WebSockets, wait up to ``timeout_graceful_shutdown`` for requests in
    flight, *cancel* the rest, then run the lifespan exit. A request waiting
    for ring space would be cancelled (a 500 for its client) before the
    lifespan could stop the producer. So the producer's stop starts with the
    shutdown: new batches get 503 ``stopping`` at once, queued ones get
    ``shutdown_grace`` seconds to commit and then a 503 -- all answered
    before uvicorn's own, longer, grace ends (``Runtime.begin_shutdown``: the
    fleet front door too). The lifespan's stops are then no-op waits.
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app
        self._stopping: asyncio.Task[None] | None = None
        settings: Settings = app.state.settings
        self.guard = connguard.install(
            self.server_state,
            max_connections=settings.max_connections,
            header_timeout=settings.header_timeout,
            retry_after=settings.retry_after,
        )
        app.state.metrics.registry.register(connguard.ConnectionCollector(self.guard))

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.guard.start(asyncio.get_running_loop(), self.config.backlog)
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
            self._stopping = rt.begin_shutdown()
        await super().shutdown(sockets)
        self.guard.stop()


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
    """The listening socket, bound *and listening* before anything is loaded or pinned.

    A start that cannot listen (port in use) fails before it creates pins,
    maps a ring or arms a timer. ``listen()`` belongs here too, not only
    ``bind()``: two ``SO_REUSEADDR`` sockets may bind one port as long as
    neither listens, so of two services started at once both would bind,
    both would load and pin, and the loser would learn only at uvicorn's
    ``listen()`` -- with its pins made.
    """
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))
        # uvicorn listens again with its backlog (the same: uvicorn_config).
        sock.listen(connguard.backlog_for(connguard.fd_limit()))
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


@contextlib.contextmanager
def _stop_signals_end_the_run(server: uvicorn.Server) -> Iterator[None]:
    """SIGTERM and SIGINT stop the server and then let :func:`run` return.

    uvicorn catches both while it serves, shuts down in order and then, once
    it has put back the handlers it found, raises the signal again so that
    the process dies "of" it: a SIGTERM exit status of 143, where an orderly
    stop should exit 0 (what the README promises; a supervisor or
    ``docker stop`` reads anything else as a failure). The handlers it finds
    here are its own ``handle_exit``: the re-raised signal only sets a flag
    nobody reads any more, and :func:`run` returns. A signal that arrives
    before uvicorn installs its handlers stops the server the same way.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers are the main thread's (uvicorn skips them too)
        return
    previous = {sig: signal.signal(sig, server.handle_exit) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def run(settings: Settings) -> int:
    """Serve until SIGINT/SIGTERM; returns the process exit status."""
    configure_logging(settings.log_level, json_lines=settings.log_json)
    # Room for connections: the connection cap is fitted below this limit.
    connguard.raise_fd_limit()
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
    # What the process built to start (imports, the app, its models: ~80 k
    # objects) lives as long as it does. Frozen, the garbage collector no
    # longer walks it: a full collection took tens of ms on the event loop,
    # and every ack in flight waited for it.
    gc.collect()
    gc.freeze()
    try:
        with _stop_signals_end_the_run(server):
            server.run(sockets=[sock])
    finally:
        sock.close()
        logging.getLogger("uvicorn.error").removeFilter(quiet)
    # uvicorn returns normally also when the lifespan startup failed (it has
    # logged why); `started` tells the two apart.
    return 0 if server.started else STARTUP_FAILURE
