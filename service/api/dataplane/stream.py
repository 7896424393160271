"""``WS /v1/stream`` on the data plane: :func:`open_stream` and :class:`Stream`.

The protocol is the one :mod:`ringbridge.api.ws` documents (text frames
``{"id", "samples"}``, binary frames numbered from 0, one ack per frame in
order, error acks that leave the stream open, a window of un-acked frames,
``?wait=consumed``, refusals in the handshake, 1012 at shutdown after every
ack); here it runs without ASGI messages or tasks:

- the handshake is the ``websockets`` library's (``ServerProtocol.accept``:
  key, version, upgrade headers; no extension is offered back, so
  permessage-deflate is never on); the refusals are the HTTP answers of
  ``POST /v1/samples``;
- a whole binary frame of a plausible size is received straight into ring
  space claimed for it, unmasked and validated there in one native call
  (``rb_ws_unmask_validate``), and published in its turn -- or discarded
  (one DISCARD record) with an error ack;
- a binary frame that cannot go to the ring now (ring full, batches in
  line) is not read: the connection stops reading (its bytes stay in the
  socket, not in our heap) while a claim request waits in the producer's
  line, in FIFO order with the batches there; at its turn the producer
  claims its region and the frame is received in place as above;
- text frames and fragmented messages are received into a buffer of their
  size (paid by admission credit), decoded, then copied into the ring at
  once or put in line;
- acks are written in frame order, those ready in one event-loop pass
  together (a quarter window at once, mid-pass); with ``ws_window`` frames
  un-acked the connection stops reading (TCP pushes back).

Credit, idle streams, streams per peer: :mod:`ringbridge.api.wslimits`
(here, :mod:`.streamcredit`). A stream holds no credit of its own; each
data frame is reserved at its header, before its payload is read, or waits
unread in line; the reservation is its batch's credit until its ack.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import deque
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Final

from websockets.http11 import Request
from websockets.server import ServerProtocol

from ... import wire
from ...errors import RingbridgeError, StoppingError
from ...producer.admission import Credit
from ...runtime import Runtime
from ...wire import Ack, WaitFor
from .. import ingest
from ..auth import check_authorization
from . import wsframes as wf
from .busyack import BusyAck
from .frame import Frame
from .handler import Handler
from .head import Head
from .streamcredit import StreamCredit

if TYPE_CHECKING:
    from .connection import DataPlaneProtocol

__all__ = ["PONG_BUFFER_LIMIT", "Stream", "open_stream"]

log = logging.getLogger("ringbridge.ws")

#: Unsent bytes above which a ping gets no pong (the peer is not reading):
#: RFC 6455 section 5.5.3 lets an endpoint answer only the most recent ping.
PONG_BUFFER_LIMIT: Final = 64 * 1024


def open_stream(conn: DataPlaneProtocol, head: Head, raw: bytes) -> Stream | None:
    """The handshake of ``head`` (``raw``: its bytes): the stream, or None when
    refused (answered, and the connection closes)."""
    p = conn.p
    rt = p.runtime
    try:
        if rt is None:
            raise StoppingError("the service is not running (starting or stopping)")
        check_authorization(head.authorization, rt.settings.token)
        wait, timeout = wire.parse_query(head.query)
        if rt.streams.stopping:
            raise StoppingError("the service is stopping and takes no new streams")
        peer = conn.client[0] if conn.client else ""
        rt.streams.check_peer(peer, rt.settings.ws_max_per_peer)
    except RingbridgeError as exc:
        conn.write(p.answers.error(rt, exc, close=True))
        conn.close()
        return None
    proto = ServerProtocol(extensions=None, max_size=None)
    proto.receive_data(raw)
    events = proto.events_received()
    request = events[0] if events and isinstance(events[0], Request) else None
    response = proto.reject(400, "Bad WebSocket handshake\n") if request is None else None
    if request is not None:
        response = proto.accept(request)
    assert response is not None
    proto.send_response(response)
    conn.write(b"".join(proto.data_to_send()))
    if response.status_code != 101:
        conn.close()
        return None
    stream = Stream(conn, rt, wait, ingest.request_timeout(rt, timeout))
    conn.busy_ack = BusyAck(conn.transport, conn.loop)
    rt.streams.add(stream, peer)
    return stream


class Stream(StreamCredit, Handler):
    """One open stream: frames in, acks out, in order (see the module docstring)."""

    def __init__(
        self,
        conn: DataPlaneProtocol,
        rt: Runtime,
        wait: WaitFor,
        consume_timeout: float,
    ) -> None:
        self.c = conn
        self.rt = rt
        self.wait = wait
        self.consume_timeout = consume_timeout
        s = rt.settings
        self.window = s.ws_window
        self.max_frame = s.ws_frame_bytes
        self.max_batch = s.max_batch_bytes
        self.submit_timeout = s.submit_timeout
        self.readahead = s.ws_readahead_bytes  # see .readahead
        self.scan_max = min(self.max_frame, self.max_batch)
        self.read_ahead = 0  # frames taken read ahead
        sock = conn.transport.get_extra_info("socket")
        self.fd = sock.fileno() if sock is not None else -1
        self.pending: deque[Frame] = deque()  # taken, in order, until their acks are out
        self.frames = 0
        self.stopping = False  # shutdown: no new frames
        self.closing = 0  # the close code to send once every ack is out (0: open)
        self.frag: bytearray | None = None  # a fragmented message being assembled
        self.frag_text = False
        self.init_credit(conn.p.app.state.ws_reads, s.ws_idle_timeout)
        self.out: list[bytes] = []
        self.flush_due = False
        self._seen = 0  # frames taken when the gathered acks were last looked at
        self.flush_batch = max(1, self.window // 4)
        self.pongs_dropped = 0
        self.tasks: set[asyncio.Future[None]] = set()
        self._ping_payload: bytes | None = None
        self._ping_timer: asyncio.TimerHandle | None = None
        self._arm_ping()

    # -- frames in ----------------------------------------------------------------------

    def resume(self) -> None:
        """Take the frames staged, while the window and the state allow."""
        c = self.c
        try:
            while c.sink is None and not c.gone and not self.waiting_credit and not self.ring_wait:
                if self.closing or self.stopping or len(self.pending) >= self.window:
                    c.pause()  # TCP pushes back; resumed by an ack (or never)
                    return
                head = wf.parse_head(c.stage, c.start, c.end)
                if head is None:
                    return
                ready, credit = self._frame_credit(head)
                if not ready:
                    return  # waits in line, reading paused; the header stays staged
                c.take(head.size)
                self._frame(head, credit)
        except wf.FrameError as exc:
            self._protocol_error(exc.code, exc.reason)

    def _frame(self, head: wf.Head, credit: Credit | None) -> None:
        op = head.opcode
        if op >= wf.CLOSE:
            buf = bytearray(head.length)
            self.c.receive(memoryview(buf), head.length, lambda: self._control(op, head, buf))
            return
        if head.length > self.max_frame:
            raise wf.FrameError(wf.CLOSE_TOO_BIG, f"frame over {self.max_frame} bytes")
        if op == wf.CONT or self.frag is not None:
            self._fragment(head, credit)
            return
        if not head.fin:
            self.frag = bytearray()
            self.frag_text = op == wf.TEXT
            self._fragment(head, credit, first=True)
            return
        frame = Frame(self, self.frames, op == wf.TEXT, head.length, head.key, credit)
        self.frames += 1
        self.pending.append(frame)
        frame.begin()

    def _fragment(self, head: wf.Head, credit: Credit | None, first: bool = False) -> None:
        frag = self.frag
        if credit is not None:
            if self.frag_credit is None:
                self.frag_credit = credit
            else:
                self.frag_credit.absorb(credit)
        if frag is None or (head.opcode != wf.CONT) != first:
            raise wf.FrameError(wf.CLOSE_PROTOCOL, "unexpected continuation or data frame")
        if len(frag) + head.length > self.max_frame:
            raise wf.FrameError(wf.CLOSE_TOO_BIG, f"message over {self.max_frame} bytes")
        part = bytearray(head.length)

        def done() -> None:
            self.c.p.in_place.unmask_buffer(part, head.key)
            frag.extend(part)
            if head.fin:
                self.frag = None
                paid, self.frag_credit = self.frag_credit, None
                frame = Frame(self, self.frames, self.frag_text, len(frag), 0, paid)
                self.frames += 1
                self.pending.append(frame)
                frame.assembled(frag)

        self.c.receive(memoryview(part), head.length, done)

    def _control(self, op: int, head: wf.Head, buf: bytearray) -> None:
        payload = wf.unmask_bytes(buf, head.key)
        if op == wf.PING:
            if self.c.transport.get_write_buffer_size() > PONG_BUFFER_LIMIT:
                self.pongs_dropped += 1
            else:
                self._send(wf.server_frame(wf.PONG, payload))
        elif op == wf.PONG:
            if payload == self._ping_payload:
                self._ping_payload = None
        else:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else wf.CLOSE_NORMAL
            self._close_when_acked(code if 1000 <= code < 5000 else wf.CLOSE_PROTOCOL)

    def _protocol_error(self, code: int, reason: str) -> None:
        """The peer broke the protocol: close with ``code`` now (acks ready go first)."""
        self.closing = code
        for frame in self.pending:
            frame.lost()  # one arriving or waiting unread is dropped; whole ones commit
        self.pending.clear()
        self._send(wf.close_frame(code, reason))
        self._flush()
        self.c.close()

    def text_refused(self) -> None:
        """A text frame that is not UTF-8: 1007, as websockets would close."""
        self._protocol_error(wf.CLOSE_INVALID_DATA, "invalid UTF-8 in a text frame")

    # -- acks out -----------------------------------------------------------------------

    def settle(self) -> None:
        """Write the acks that are ready, in frame order; reopen the window."""
        pending, wrote = self.pending, False
        while pending and pending[0].answer is not None:
            frame = pending.popleft()
            assert frame.answer is not None
            self._send(wf.server_frame(wf.TEXT, frame.answer))
            wrote = True
        if not wrote:
            return
        if len(self.out) >= self.flush_batch:  # mid-pass: see _flush_when_quiet
            self._flush()
        if not pending and self.frag is None and not self.waiting_credit:
            self.idle.idle()  # no frame received, no ack owed: idle from now
        if self.closing or self.stopping:
            if not pending:
                self._close_now()
            return
        if self.c.paused and len(pending) < self.window and not self.ring_wait:
            self.c.unpause()
            self.resume()

    def acked(self, frame: Frame, ack: Ack) -> None:
        """``frame``'s batch is committed: its ack (after the kernel, with wait=consumed)."""
        if self.wait == "consumed":
            self.spawn(self._consumed(frame, ack))
            return
        self._ack(frame, ack)

    async def _consumed(self, frame: Frame, ack: Ack) -> None:
        self._ack(frame, await self.rt.producer.wait_consumed(ack, self.consume_timeout))

    def _ack(self, frame: Frame, ack: Ack) -> None:
        if frame.arrival is not None:
            self.rt.batches.acked("ws", frame.arrival, ack, self.wait)
        frame.answer = wire.frame_ack_json(frame.id, ack)
        self.settle()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` beside the stream (held here until it is done)."""
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def refused(self, frame: Frame, exc: RingbridgeError) -> None:
        frame.answer = ingest.refuse_frame(self.rt, frame.id, exc)
        self.settle()

    def _send(self, data: bytes) -> None:
        self.out.append(data)
        if not self.flush_due:
            self.flush_due = True
            self._seen = self.frames
            self.c.loop.call_soon(self._flush_when_quiet)

    def _flush_when_quiet(self) -> None:
        """Write the acks gathered, unless frames keep arriving and few are due.

        Each write is a syscall, which cost more than the frames it answered
        when every event-loop pass wrote the one or two acks it had (a
        client pipelining a window of frames keeps the loop passing). So the
        write waits while the last pass took new frames and fewer than a
        quarter of the window's acks are gathered; it happens as soon as a
        pass takes none -- the client waits for acks, the window is full
        and reading paused, or the stream is idle -- so an ack is never held
        while nothing else comes, and a client with one frame in flight gets
        it in the next pass. A quarter window of acks is written at once,
        mid-pass (:meth:`settle`): a read-ahead run settles a window's frames
        in one pass, and a client whose window they filled sends again while
        the rest are settled (4096 B frames: +37% frames/s at window 16).
        """
        if (
            self.out  # else written mid-pass meanwhile
            and self.frames != self._seen
            and len(self.out) < self.flush_batch
            and not self.c.paused
            and not self.c.gone
        ):
            self._seen = self.frames
            self.c.loop.call_soon(self._flush_when_quiet)
            return
        self.flush_due = False  # while True, this callback is pending
        self._flush()

    def _flush(self) -> None:
        out = self.out
        if out:
            self.out = []
            self.c.write(out[0] if len(out) == 1 else b"".join(out))

    # -- ending -------------------------------------------------------------------------

    def _close_when_acked(self, code: int) -> None:
        self.closing = code
        self.c.pause()
        if not self.pending:
            self._close_now()

    def _close_now(self) -> None:
        code = self.closing or wire.rule(StoppingError.code).close
        reason = "server stopping; every batch was acked" if self.stopping else ""
        reason = self.close_reason or reason
        self._send(wf.close_frame(code, reason))
        self._flush()
        self._end()
        self.c.close()

    def _end(self) -> None:
        self.rt.streams.discard(self)
        self.release_credit()
        if self._ping_timer is not None:
            self._ping_timer.cancel()
            self._ping_timer = None

    def stop_reading(self) -> None:
        """Shutdown (``Runtime.streams``): no new frames; close 1012 once every ack is out.

        A frame arriving into ring space may finish (or fails with the
        producer's grace); one arriving into memory is refused now.
        """
        if self.stopping:
            return
        self.stopping = True
        self.leave_line()
        c = self.c
        last = self.pending[-1] if self.pending else None
        if c.sink is not None and (last is None or last.region is None):
            c.sink = None
            if last is not None and last.receiving:
                last.lost()
                self.refused(last, StoppingError("the service stopped while this frame arrived"))
        if c.sink is None:
            c.pause()
        if not self.pending and c.sink is None:
            self._close_now()

    def shutdown(self) -> None:
        self.stop_reading()

    def lost(self) -> None:
        """The peer is gone: frames received whole still commit (fire and forget);
        one still arriving is dropped."""
        for frame in self.pending:
            frame.lost()
        self.pending.clear()
        self._end()

    # -- keepalive --------------------------------------------------------------------

    def _arm_ping(self) -> None:
        interval = self.c.config.ws_ping_interval
        if interval:
            self._ping_timer = self.c.loop.call_later(interval, self._ping)

    def _ping(self) -> None:
        self._ping_timer = None
        if self.c.gone:
            return
        if self._ping_payload is not None and self.c.paused:
            # Not reading (the window, credit or ring space): the pong may be
            # in the socket, unread. Judged once reading goes on.
            self._arm_ping()
            return
        if self._ping_payload is not None:
            # No pong for a whole interval (at least ws_ping_timeout): dead peer.
            timeout = self.c.config.ws_ping_timeout
            if timeout is not None:
                self._protocol_error(1011, "keepalive ping timeout")
                return
        self._ping_payload = os.urandom(4)
        self._send(wf.server_frame(wf.PING, self._ping_payload))
        self._arm_ping()
