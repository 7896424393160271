"""uvicorn's sans-I/O WebSocket protocol, bounded: :class:`RingbridgeWSProtocol`.

What it adds to uvicorn's (whose private API it relies on: see
``tests/service/test_uvicorn_private.py``):

- frames read on credit (:mod:`ringbridge.api.wsread`): each data frame is
  reserved when its header arrives and its reservation travels with the
  message to the app (``message["ringbridge.credit"]``); a connection whose
  next frame finds no credit stops reading and waits in line; an idle
  connection holds nothing;
- read-ahead within one frame buffer, acks written once per loop pass, pongs
  bounded, and the app's own orderly close at shutdown (see the class).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from uvicorn._types import ASGIReceiveEvent, ASGISendEvent
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.http11 import Request

from ..producer.admission import Credit
from .wsread import FrameMeter, ReadCredit

__all__ = ["CREDIT_KEY", "PONG_BUFFER_LIMIT", "RingbridgeWSProtocol"]

#: The key of a received message's frame credit (an ASGI extension of ours).
CREDIT_KEY = "ringbridge.credit"

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
    _credits: deque[Credit | None] | None = None  # of the messages queued for the app
    _meter: FrameMeter | None = None
    _credit_paused = False  # stopped reading for want of frame credit (wsread)

    # -- frames on credit ---------------------------------------------------------

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        app: Any = self.config.app
        line: ReadCredit | None = getattr(getattr(app, "state", None), "ws_reads", None)
        if line is not None and not self.close_sent:
            # From here on the bytes are frames.
            self._meter = FrameMeter(line, self, self.config.ws_max_size)

    def data_received(self, data: bytes) -> None:
        meter = self._meter
        if meter is not None:
            data = meter.feed(data)
            if not data:
                return
        super().data_received(data)

    def pause_for_credit(self) -> None:
        if not self._credit_paused:
            self._credit_paused = True
            if not self.transport.is_closing():
                self.transport.pause_reading()

    def resume_for_credit(self) -> None:
        self._credit_paused = False
        self._resume_reading()

    def credit_granted(self, meter: FrameMeter, credit: Credit) -> None:
        data = meter.grant(credit)
        self._credit_paused = meter.waiting
        if data and not self.transport.is_closing():
            WebSocketsSansIOProtocol.data_received(self, data)
        self._resume_reading()

    def _resume_reading(self) -> None:
        # Two reasons to stop reading: uvicorn's (messages wait for the app)
        # and ours (no credit); read again only when neither holds.
        if not self.read_paused and not self._credit_paused and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        # Frames half received, or held back, go; messages queued for the
        # app keep theirs: the app takes them before it sees the disconnect.
        if self._meter is not None:
            self._meter.close()
        super().connection_lost(exc)

    async def run_asgi(self) -> None:
        try:
            await super().run_asgi()
        finally:
            # The app is gone: what it will never take goes back.
            credits, self._credits = self._credits, None
            for credit in credits or ():
                if credit is not None:
                    credit.release()

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
        if self._credits is None:
            self._credits = deque()
        size = sum(len(f) for f in self.frames)
        credit = self._meter.message_done() if self._meter is not None else None
        was_paused = self.read_paused
        before = self.queue.qsize()
        super().send_receive_event_to_app()
        if self.queue.qsize() == before:
            if credit is not None:
                credit.release()
            return  # discarded (past close) or refused (bad UTF-8)
        self._queued.append(size)
        self._queued_bytes += size
        self._credits.append(credit)
        if (
            not was_paused
            and self.read_paused
            and self._queued_bytes < self.config.ws_max_size
            and not self.transport.is_closing()
        ):
            self.read_paused = False
            self._resume_reading()

    async def receive(self) -> ASGIReceiveEvent:
        # uvicorn's receive, but resuming only when the credit allows too.
        message = await self.queue.get()
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            self._resume_reading()
        if message["type"] == "websocket.receive" and self._queued:
            self._queued_bytes -= self._queued.popleft()
            credit = self._credits.popleft() if self._credits else None
            if credit is not None:
                held: dict[str, Any] = message  # type: ignore[assignment]
                held[CREDIT_KEY] = credit
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


