"""``WS /v1/stream``: pipelined batches over one WebSocket, one ack per batch, in order.

Protocol (documented in the README):

- text frame ``{"id": <any JSON>, "samples": [S, ...]}``; binary frame: one
  batch in record format whose id is its 0-based frame number on the
  connection (every frame, text or binary, takes a number);
- the server answers every batch, in the order received:
  ``{"id", "accepted", "first_seq", "last_seq", "state"}`` or
  ``{"id", "error": {"code", "message", "index"}}`` -- with the frame's own
  id in every case, whatever failed. A bad batch gets an error ack and the
  stream stays open;
- ``?wait=consumed`` at the handshake (read as on ``POST /v1/samples``, by
  :func:`ringbridge.wire.parse_query`, refused the same way): each ack waits
  until the kernel's consumer passed its batch, up to ``?timeout=`` seconds
  (default ``submit_timeout``, at most ``max_timeout``) after the commit;
  ``state`` says which it was. Acks stay in order: a later batch is never
  consumed before an earlier one anyway.

A refused handshake is an HTTP answer, the one ``POST /v1/samples`` would
get (:func:`ringbridge.api.ingest.refuse`): 401/403, 422 ``invalid_request``,
503 + Retry-After. Frames are decoded and refused by the same steps as a
request body (:mod:`ringbridge.api.ingest`).

This is the stream under a server other than ours (an ASGI server running
the app): ``ringbridge serve`` serves ``WS /v1/stream`` on its data plane
(:mod:`ringbridge.api.dataplane.stream`), which reads each frame only once
credit for it is reserved. Here the server hands over whole messages, so
each is admitted as it comes. The rules of :mod:`ringbridge.api.wslimits`
hold on both:

Admission: a connection holds no credit of its own. Each frame takes credit
for its size when it arrives (an ``overloaded`` error ack when there is
none), which pays for the decode's working set on top while it runs (JSON),
is resized to the batch's ring bytes and returned at the batch's ack. A
peer may hold ``ws_max_per_peer`` connections (429 at the handshake
beyond), and a connection with no frame received and no ack owed for
``ws_idle_timeout`` seconds is closed (1001).

Two tasks per connection. The *reader* validates each frame and enqueues it
with the producer (enqueue order is commit order), then puts the ack's
future -- or the error -- on an ordered list for the *writer*, which awaits
them one by one and sends the acks. A semaphore of ``ws_window`` permits is
taken before each read and given back after each ack is sent: with
``ws_window`` batches un-acked the reader stops calling ``receive()``, the
socket buffers fill and TCP pushes back on the client.

Batches already enqueued when the client goes away are still committed (the
client may have sent them fire-and-forget); their acks have nobody to go to.

Shutdown: the server calls ``Runtime.streams.shutdown()``; each stream stops
reading frames, writes the ack of every batch it took (committed, or refused
with ``stopping`` once the producer's grace ends), then closes with the
close code of ``stopping`` (1012, service restart). A client that resends
only what was not acked resends no committed sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from .. import wire
from ..errors import RingbridgeError, StoppingError
from ..producer.admission import Credit
from ..producer.observe import Arrival
from ..runtime import Runtime
from ..schema import EncodedBatch, frame_id
from ..wire import Ack, WaitFor
from . import ingest
from .auth import check_token
from .state import runtime_of
from .wslimits import IdleTimer

log = logging.getLogger("ringbridge.ws")
router = APIRouter()

#: A frame's answer in the making: (its id, the future of its ack, when and
#: how it came), or its error ack already written (refused before it reached
#: the producer).
_Pending = tuple[Any, "asyncio.Future[Ack]", Arrival] | bytes
_END = object()


def _retrieve(fut: asyncio.Future[Ack]) -> None:
    # An ack whose connection is gone is awaited by nobody: mark its
    # exception retrieved so asyncio does not log "exception was never
    # retrieved". Harmless when the writer does await it.
    if not fut.cancelled():
        fut.exception()


async def _decode(
    rt: Runtime, message: Mapping[str, Any], frame_no: int, deadline: float
) -> tuple[Any, EncodedBatch | RingbridgeError]:
    """(the frame's id, its batch or why it is refused), decoded as a body is
    (:func:`ringbridge.api.ingest.decode`: charged, big ones in a worker).

    A binary frame's id is its number; a text frame's is its ``"id"``, read
    back from the raw text when the frame is refused (None if unreadable).
    """
    text: str | None = message.get("text")
    try:
        if text is None:
            data = message.get("bytes") or b""
            return frame_no, (await ingest.decode(rt, ingest.BINARY, data, deadline))[1]
        return await ingest.decode(rt, ingest.TEXT_FRAME, text, deadline)
    except RingbridgeError as exc:
        return (frame_no if text is None else frame_id(text)), exc


class _Stream:
    def __init__(
        self,
        ws: WebSocket,
        rt: Runtime,
        wait: WaitFor = "committed",
        consume_timeout: float = 0.0,
    ) -> None:
        self.ws = ws
        self.rt = rt
        self.wait = wait
        self.consume_timeout = consume_timeout
        self.window = asyncio.Semaphore(rt.settings.ws_window)
        self.pending: asyncio.Queue[_Pending | object] = asyncio.Queue()
        self.frames = 0
        self.owed = 0  # frames taken whose ack is not written yet
        self._stop = False
        self._close: tuple[int, str] = (
            wire.rule(StoppingError.code).close,
            "server stopping; every batch was acked",
        )
        self._interruptible = False  # the reader waits for a frame, holding none
        self._reader: asyncio.Task[None] | None = None
        self._idle = IdleTimer(
            asyncio.get_running_loop(), rt.settings.ws_idle_timeout, self._idle_out
        )

    def stop_reading(self) -> None:
        self._stop = True
        if self._interruptible and self._reader is not None:
            self._reader.cancel()

    def _idle_out(self, code: int, reason: str) -> None:
        if self.owed == 0 and not self._stop:
            self._close = (code, reason)
            self.stop_reading()

    async def run(self) -> None:
        reader = self._reader = asyncio.create_task(self._read(), name="ringbridge-ws-read")
        writer = asyncio.create_task(self._write(), name="ringbridge-ws-write")
        try:
            # The reader ends on disconnect or shutdown; the writer on a send
            # error, or after the last ack once the reader stopped.
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if reader in done and self._stop and not writer.done():
                await writer  # shutdown: every ack taken is written first
            for t in done:
                if t.cancelled():
                    continue
                exc = t.exception()
                if exc is not None and not isinstance(exc, WebSocketDisconnect | OSError):
                    log.error("websocket stream failed", exc_info=exc)
            if self._stop and writer.done() and not writer.cancelled() and not writer.exception():
                with contextlib.suppress(Exception):
                    await self.ws.close(*self._close)
        finally:
            self._idle.busy()
            for t in (reader, writer):
                t.cancel()
            for t in (reader, writer):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    async def _read(self) -> None:
        try:
            await self._read_frames()
        finally:
            if self._stop:
                # Also when cancelled out of receive(): the writer finishes
                # the acks before this mark, then the stream closes.
                self.pending.put_nowait(_END)

    async def _read_frames(self) -> None:
        loop = asyncio.get_running_loop()
        self._idle.idle()
        while not self._stop:
            # Taken before reading: with the window full we stop reading.
            self._interruptible = True
            try:
                await self.window.acquire()
                message = await self.ws.receive()
            finally:
                self._interruptible = False
            if message["type"] == "websocket.disconnect":
                return
            self._idle.busy()
            self.owed += 1
            frame_no = self.frames
            self.frames += 1
            arrival = Arrival.now("binary" if message.get("text") is None else "json")
            credit = self._frame_credit(message)
            deadline = loop.time() + self.rt.settings.submit_timeout
            try:
                fid, batch = await _decode(self.rt, message, frame_no, deadline)
            except BaseException:
                if isinstance(credit, Credit):
                    credit.release()  # cancelled mid-decode: the connection is ending
                raise
            del message
            self.pending.put_nowait(self._take(fid, batch, credit, deadline, arrival))
            del batch  # held by the producer now: not by this frame until the next frame

    def _frame_credit(self, message: Mapping[str, Any]) -> Credit | RingbridgeError:
        """The frame's credit, which pays for the batch until its ack."""
        size = len(message.get("text") or message.get("bytes") or b"")
        try:
            return self.rt.producer.admit(size, self.rt.settings.submit_timeout)
        except RingbridgeError as exc:
            return exc

    def _take(
        self,
        fid: Any,
        batch: EncodedBatch | RingbridgeError,
        credit: Credit | RingbridgeError,
        deadline: float,
        arrival: Arrival,
    ) -> _Pending:
        """The batch enqueued with the producer (its ack's future), or its error ack."""
        if isinstance(credit, RingbridgeError):
            return ingest.refuse_frame(self.rt, fid, credit)
        if isinstance(batch, RingbridgeError):
            credit.release()
            return ingest.refuse_frame(self.rt, fid, batch)
        try:
            credit.resize(batch.nbytes)
            credit.deadline = deadline
            fut = self.rt.producer.enqueue(batch, credit)
        except RingbridgeError as exc:
            credit.release()
            return ingest.refuse_frame(self.rt, fid, exc)
        # If the connection dies first, nobody awaits this ack.
        fut.add_done_callback(_retrieve)
        return (fid, fut, arrival)

    async def _write(self) -> None:
        while True:
            entry = await self.pending.get()
            if entry is _END:
                return
            if isinstance(entry, bytes):
                answer = entry
            else:
                assert isinstance(entry, tuple)
                fid, fut, arrival = entry
                try:
                    # Shielded: if this connection dies while we wait, the
                    # batch must still commit in its turn, not be cancelled
                    # behind later batches that do commit.
                    ack = await asyncio.shield(fut)
                except RingbridgeError as exc:
                    answer = ingest.refuse_frame(self.rt, fid, exc)
                else:
                    if self.wait == "consumed":
                        ack = await self.rt.producer.wait_consumed(ack, self.consume_timeout)
                    self.rt.batches.acked("ws", arrival, ack, self.wait)
                    answer = wire.frame_ack_json(fid, ack)
            await self.ws.send_text(answer.decode())
            self.window.release()
            self.owed -= 1
            if self.owed == 0 and not self._stop:
                self._idle.idle()


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    try:
        rt = runtime_of(ws.app)
        check_token(ws, rt.settings.token)
        wait, timeout = wire.parse_query(ws.scope.get("query_string", b""))
        if rt.streams.stopping:
            raise StoppingError("the service is stopping and takes no new streams")
        peer = ws.client.host if ws.client is not None else ""
        rt.streams.check_peer(peer, rt.settings.ws_max_per_peer)
    except RingbridgeError as exc:
        # Refused in the HTTP handshake, with the answer POST /v1/samples
        # would get: clients report that far better than an
        # accepted-then-closed socket.
        await ws.send_denial_response(ingest.refuse(ws.app, exc))
        return
    s = _Stream(ws, rt, wait, ingest.request_timeout(rt, timeout))
    rt.streams.add(s, peer)
    try:
        await ws.accept()
        await s.run()
    finally:
        rt.streams.discard(s)
