"""One connection of the data plane: :class:`DataPlaneProtocol`, an ``asyncio.BufferedProtocol``.

uvicorn creates it for every accepted connection (``uvicorn.Config(http=...)``,
see :mod:`ringbridge.api.server`). uvloop calls :meth:`get_buffer` and then
:meth:`buffer_updated`: the kernel copies socket bytes straight into the
buffer returned, so where the bytes land is decided here, once per read:

- the connection's staging buffer, for request heads, WebSocket frame
  headers and small frames;
- a *sink*: the rest of a body or frame whose length is known -- ring space
  claimed for it (:meth:`ringbridge.producer.task.Producer.claim`), a
  buffer of exactly its size when it cannot go to the ring now, or a
  scratch buffer whose bytes are dropped (a refused frame).

States: ``HEAD`` (reading a request head) -> ``REQUEST`` (a ``POST
/v1/samples`` in progress: its body, then its answer; see :mod:`.post`) ->
``HEAD`` again (keep-alive), or ``STREAM`` (after a WebSocket upgrade; see
:mod:`.stream`), or handed off: any other request goes, with every byte
staged so far, to an unmodified uvicorn ``HttpToolsProtocol`` (``FastAPI``:
metrics, stats, health, docs, events), which takes the transport for the
rest of the connection (``transport.set_protocol``, as uvicorn itself hands
an upgraded connection to its WebSocket protocol).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Final

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import get_remote_addr
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from ...errors import RingbridgeError
from ..connguard import ConnectionGuard, guard_of
from ..keepalive import bytes_waiting
from ..lazytimer import LazyTimer
from .busyack import OFF, BusyAck
from .handler import Handler, Sink
from .head import POST_SAMPLES, STREAM, parse_head, route_of
from .plane import STAGE_BYTES, Plane
from .post import PostRequest
from .stream import open_stream

log = logging.getLogger("ringbridge.dataplane")

HEAD: Final = 0
REQUEST: Final = 1
STREAM_STATE: Final = 2
CLOSED: Final = 3


class DataPlaneProtocol(asyncio.BufferedProtocol):
    """The data plane's connection (bind it to a :class:`Plane` with :meth:`bound`)."""

    plane: Plane | None = None
    #: The protocol requests the data plane does not serve are handed to.
    fallback: type[HttpToolsProtocol] = HttpToolsProtocol
    #: ... and WebSocket upgrades it does not serve (``/v1/events``).
    ws_fallback: type[asyncio.Protocol] = WebSocketsSansIOProtocol
    #: uvicorn's keep-alive: an idle connection between requests closes after it.
    keep_alive: float = 5.0

    @classmethod
    def bound(
        cls, app: Any, fallback: type[HttpToolsProtocol] = HttpToolsProtocol
    ) -> type[DataPlaneProtocol]:
        """This class for ``app`` (its plane is made at the first connection),
        handing what it does not serve to ``fallback``."""
        return type("BoundDataPlaneProtocol", (cls,), {"_app": app, "fallback": fallback})

    _app: Any = None
    busy_ack: BusyAck = OFF  # a stream's own from its upgrade (api/dataplane/busyack.py)

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        if not config.loaded:
            config.load()
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop or asyncio.get_event_loop()
        cls = type(self)
        if cls.plane is None:
            cls.plane = Plane(cls._app, server_state)
        self.p: Plane = cls.plane
        self.keep_alive = config.timeout_keep_alive
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.stage = bytearray(STAGE_BYTES)
        self.view = memoryview(self.stage)
        self.start = 0  # unread staged bytes: stage[start:end]
        self.end = 0
        self.sink: Sink | None = None
        self.got = 0  # bytes in the sink's buffer when its ``done`` runs
        self.handler: Handler | None = None
        self.state = HEAD
        self.gone = False
        self.paused = False
        self._idle = LazyTimer(self.loop)  # keep-alive: closed when idle this long
        #: A request's body: late when it has not all arrived by then (api/dataplane/post.py).
        self.body_timer = LazyTimer(self.loop)
        self._scan_from = 0  # where the search for the head's end resumes
        # The server's connection guard (header deadline, connection cap):
        # told when a request begins, when its head is complete, when its
        # answer is out, as it is by uvicorn's protocol (api/connguard.py).
        self.guard: ConnectionGuard | None = None
        self._began = False
        self._upgraded = False  # made by uvicorn's HTTP protocol for an upgrade

    # -- transport -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport
        self.client = get_remote_addr(self.transport)
        self.server_state.connections.add(self)  # type: ignore[arg-type]
        self._arm_idle()
        self.guard = guard_of(self.server_state)
        if self.guard is not None:
            self.guard.opened(self)  # may close this one (the cap): connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        if self.guard is not None:
            self.guard.lost(self)
        self.gone = True
        self.state = CLOSED
        self._cancel_idle()
        handler, self.handler = self.handler, None
        if handler is not None:
            # Before the sink goes: a request still receiving its body tells
            # it from one received whole by it (and gives its region back now,
            # not when its body timer would have passed).
            handler.lost()
        self.sink = None

    def data_received(self, data: bytes) -> None:
        """Bytes handed over by uvicorn's HTTP protocol, which creates this protocol
        as its WebSocket protocol (``uvicorn.Config(ws=...)``) for an upgrade on a
        connection it took over: the upgrade request's head, rebuilt."""
        self._upgraded = True
        n = len(data)
        if self.end + n > len(self.stage):
            self.view.release()
            self.stage.extend(bytes(self.end + n - len(self.stage)))
            self.view = memoryview(self.stage)
        self.stage[self.end : self.end + n] = data
        self.end += n
        # Not now: uvicorn makes this protocol the transport's only after
        # this call returns, and a hand-off from here would be undone.
        self.loop.call_soon(self.process)

    def eof_received(self) -> bool | None:
        return None  # the transport closes: connection_lost follows (uvicorn's rule too)

    def write(self, data: bytes) -> None:
        if not self.gone and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if not self.gone:
            self.transport.close()

    def pause(self) -> None:
        if not self.paused and not self.gone:
            self.paused = True
            self.transport.pause_reading()

    def unpause(self) -> None:
        if self.paused and not self.gone:
            self.paused = False
            self.transport.resume_reading()

    # -- buffers -----------------------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        sink = self.sink
        if sink is not None:
            if sink.skip:
                return sink.buf[: min(len(sink.buf), sink.need - sink.got)]
            return sink.buf[sink.got : sink.room]
        if self.end == len(self.stage):
            self._compact()
        return self.view[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.busy_ack.read(nbytes)
        sink = self.sink
        if sink is not None:
            sink.got += nbytes
            if sink.got >= sink.need:
                self.sink = None
                self.got = sink.got
                sink.done()
                self.process()
            return
        self.end += nbytes
        self.process()

    def _compact(self) -> None:
        """Move the unread staged bytes to the front (the head or frame they start)."""
        start, end = self.start, self.end
        if start:
            self.stage[: end - start] = self.view[start:end]
            self._scan_from -= start
            self.start, self.end = 0, end - start
            return
        # Full from the start: process() handed a long head off or paused
        # reading, so uvloop does not ask again; should it, never return an
        # empty buffer (uvloop would fail the connection): grow, once.
        if len(self.stage) >= 4 * STAGE_BYTES:
            raise RuntimeError("data plane staging buffer overrun")
        self.view.release()
        self.stage.extend(bytes(len(self.stage)))
        self.view = memoryview(self.stage)

    @property
    def staged(self) -> int:
        return self.end - self.start

    def take(self, n: int) -> None:
        """Drop the first ``n`` staged bytes."""
        self.start += n
        if self.start == self.end:
            self.start = self.end = self._scan_from = 0
            if len(self.stage) > 4 * STAGE_BYTES:  # grown by unread()
                self._restage()

    def receive(
        self, buf: memoryview, need: int, done: Callable[[], None], room: int = 0, got: int = 0
    ) -> None:
        """The next ``need`` bytes into ``buf`` (``got`` there already; staged ones
        first; up to ``room`` may come: read ahead); ``done`` runs once they
        are, at once if staged, :attr:`got` saying how many came."""
        have = min(self.end - self.start, (room if room > need else need) - got)
        if have > 0:
            buf[got : got + have] = self.view[self.start : self.start + have]
            self.take(have)
            got += have
        if got >= need:
            self.got = got
            done()
            return
        sink = Sink(buf, need, done, room=room)
        sink.got = got
        self.sink = sink

    def unread(self, data: memoryview) -> None:
        """Put ``data`` (read ahead, not taken) back in front of what is staged."""
        self._restage(bytes(data) + bytes(self.view[self.start : self.end]))

    def _restage(self, data: bytes = b"") -> None:
        """A new staging buffer (of the usual size, or more), holding ``data``."""
        self.view.release()
        self.stage = bytearray(data) + bytes(max(0, STAGE_BYTES - len(data)))
        self.view = memoryview(self.stage)
        self.start, self.end, self._scan_from = 0, len(data), 0

    def skip(self, need: int, done: Callable[[], None]) -> None:
        """Read and drop the next ``need`` bytes, then ``done``."""
        have = min(self.staged, need)
        self.take(have)
        if have == need:
            done()
            return
        sink = Sink(self.p.skip, need, done, skip=True)
        sink.got = have
        self.sink = sink

    # -- what arrives ----------------------------------------------------------------

    def process(self) -> None:
        """Handle what is staged, as far as the state allows."""
        if self.state == HEAD:
            while self.state == HEAD and self.staged and not self.gone:
                if not self._head():
                    return
        elif self.state == STREAM_STATE and self.handler is not None:
            self.handler.resume()
        elif self.state == REQUEST and self.end == len(self.stage):
            # A pipelined request fills the buffer while the answer is due.
            self.pause()

    def request_in_progress(self) -> bool:
        """For the guard: a request is being read or answered, or a stream is open."""
        return self.state in (REQUEST, STREAM_STATE) or self.sink is not None

    def _head(self) -> bool:
        """One request head from the staged bytes; False when it has not all arrived."""
        self._idle.clear()  # a request begins: not idle
        if not self._began:
            self._began = True
            if self.guard is not None:
                self.guard.request_began(self)
        at = self.stage.find(b"\r\n\r\n", max(self.start, self._scan_from), self.end)
        if at < 0:
            if self.start == 0 and self.end == len(self.stage):
                self.hand_off()  # a head this long is uvicorn's to judge
                return False
            self._scan_from = max(self.start, self.end - 3)
            return False
        raw = bytes(self.view[self.start : at + 4])
        head = parse_head(raw)
        self._began = False
        if self.guard is not None:
            self.guard.headers_done(self)
        route = None if head is None else route_of(head)
        if head is None or route is None:
            # An upgrade uvicorn's HTTP protocol already handled (it rebuilt
            # the head, names lowercased, as ASGI wants them) goes on to its
            # WebSocket protocol; anything else to its HTTP protocol, which
            # upgrades through this one (config.ws) if it must.
            self.hand_off(websocket=self._upgraded)
            return False
        self.take(at + 4 - self.start)
        self._scan_from = self.start
        if route == POST_SAMPLES:
            self.state = REQUEST
            request = PostRequest(self, head)
            self.handler = request
            request.begin()
        elif route == STREAM:
            self.state = STREAM_STATE
            self.handler = open_stream(self, head, raw)
            if self.handler is None:
                self.state = CLOSED
        return True

    def request_done(self, close: bool) -> None:
        """The request's answer is written: next request, or close."""
        self.handler = None
        if close or self.gone:
            self.state = CLOSED
            self.close()
            return
        self.state = HEAD
        self._arm_idle()
        if self.guard is not None:
            self.guard.response_done(self)
        self.unpause()
        if self.staged:
            self.process()

    # -- handing a request to uvicorn ---------------------------------------------------

    def hand_off(self, websocket: bool = False) -> None:
        """Give the connection, with what is staged, to uvicorn's HTTP protocol
        (or, for a WebSocket upgrade the data plane does not serve, to uvicorn's
        WebSocket protocol, as uvicorn's HTTP protocol would)."""
        self._cancel_idle()
        self.state = CLOSED
        self.server_state.connections.discard(self)
        if self.guard is not None:
            self.guard.lost(self)  # the protocol taking over reports from here on
        cls: Any = self.fallback
        if websocket and self.config.ws_protocol_class is not None:
            cls = self.ws_fallback
        proto = cls(
            config=self.config,
            server_state=self.server_state,
            app_state=self.app_state,
            _loop=self.loop,
        )
        proto.connection_made(self.transport)
        data = bytes(self.view[self.start : self.end])
        self.start = self.end = 0
        self.transport.set_protocol(proto)
        self.unpause()
        if data:
            proto.data_received(data)

    # -- idle connections and shutdown ---------------------------------------------------

    def _arm_idle(self) -> None:
        """Idle from now: closed after keep_alive unless a request begins."""
        if not self.gone:
            self._idle.set(self.loop.time() + self.keep_alive, self._idle_timeout)

    def _cancel_idle(self) -> None:
        self._idle.close()
        self.body_timer.close()

    def _idle_timeout(self) -> None:
        if self.gone or self.state != HEAD or self.staged:
            return
        if bytes_waiting(self.transport):  # api/keepalive.py: read it, not reset
            self._arm_idle()
            return
        self.close()

    def shutdown(self) -> None:
        """uvicorn's shutdown: idle connections close; a request or stream finishes."""
        if self.state in (HEAD, CLOSED) and self.sink is None:
            self.close()
        elif self.handler is not None:
            self.handler.shutdown()

    # uvicorn's flow control calls these on its protocols.
    def pause_writing(self) -> None:
        pass

    def resume_writing(self) -> None:
        pass

    def fail(self, exc: BaseException) -> None:
        """A bug in a handler: log it, close the connection."""
        if not isinstance(exc, RingbridgeError):
            log.error("data plane connection failed", exc_info=exc)
        with contextlib.suppress(Exception):
            self.close()
