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
- ``?wait=consumed`` at the handshake (as on ``POST /v1/samples``): each ack
  waits until the kernel's consumer passed its batch, up to ``?timeout=``
  seconds (default ``submit_timeout``) after the commit; ``state`` says which
  it was. Acks stay in order: a later batch is never consumed before an
  earlier one anyway.

Admission: accepting the connection takes one frame's worth of credit (the
server reads at most one frame ahead per connection); no credit refuses the
handshake with 503 + Retry-After. Each decoded batch then takes credit for
its ring bytes while it waits to be committed (an ``overloaded`` error ack
when there is none). Both are returned: the frame credit when the
connection ends, a batch's at its ack.

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
with ``stopping`` once the producer's grace ends), then closes with 1012
(service restart). A client that resends only what was not acked resends no
committed sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import msgspec
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from ..errors import (
    InvalidBatchError,
    RecordTooLargeError,
    RequestError,
    RingbridgeError,
    SampleError,
    StoppingError,
)
from ..producer.admission import Credit
from ..producer.task import Ack, WaitFor
from ..runtime import Runtime
from ..schema import EncodedBatch, frame_id_of, validate_binary_batch
from ..schema.jsoncodec import frame_id_from
from .auth import check_token
from .ingest import THREAD_DECODE_BYTES, check_batch_size
from .state import error_payload, error_response, runtime_of

log = logging.getLogger("ringbridge.ws")
router = APIRouter()
_encode = msgspec.json.Encoder().encode

#: Close code when the service is not running (RFC 6455 "try again later").
CLOSE_TRY_AGAIN = 1013
#: Close code after a shutdown finished the acks (RFC 6455 "service restart").
CLOSE_RESTART = 1012

_Pending = tuple[Any, "asyncio.Future[Ack] | RingbridgeError"]
_END = object()


def _retrieve(fut: asyncio.Future[Ack]) -> None:
    # An ack whose connection is gone is awaited by nobody: mark its
    # exception retrieved so asyncio does not log "exception was never
    # retrieved". Harmless when the writer does await it.
    if not fut.cancelled():
        fut.exception()


def _handshake_wait(ws: WebSocket, rt: Runtime) -> tuple[WaitFor, float]:
    """``wait`` and ``timeout`` from the handshake's query string, as on HTTP."""
    given = ws.query_params.get("wait", "committed")
    if given not in ("committed", "consumed"):
        raise RequestError(f"wait={given!r}: use wait=committed or wait=consumed")
    wait: WaitFor = "consumed" if given == "consumed" else "committed"
    raw = ws.query_params.get("timeout")
    if raw is None:
        return wait, rt.settings.submit_timeout
    try:
        timeout = float(raw)
    except ValueError:
        timeout = -1.0
    if not timeout > 0:
        raise RequestError(f"timeout={raw!r}: give a positive number of seconds")
    return wait, min(timeout, rt.settings.max_timeout)


class _Stream:
    def __init__(
        self,
        ws: WebSocket,
        rt: Runtime,
        read_credit: Credit,
        wait: WaitFor = "committed",
        consume_timeout: float = 0.0,
    ) -> None:
        self.ws = ws
        self.rt = rt
        self.read_credit = read_credit
        self.wait = wait
        self.consume_timeout = consume_timeout
        self.window = asyncio.Semaphore(rt.settings.ws_window)
        self.pending: asyncio.Queue[_Pending | object] = asyncio.Queue()
        self.frames = 0
        self._stop = False
        self._interruptible = False  # the reader waits for a frame, holding none
        self._reader: asyncio.Task[None] | None = None

    def stop_reading(self) -> None:
        self._stop = True
        if self._interruptible and self._reader is not None:
            self._reader.cancel()

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
                    await self.ws.close(CLOSE_RESTART, "server stopping; every batch was acked")
        finally:
            for t in (reader, writer):
                t.cancel()
            for t in (reader, writer):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    def _decode(self, message: Mapping[str, Any], frame_no: int) -> tuple[Any, EncodedBatch]:
        s = self.rt.settings
        text: str | None = message.get("text")
        data: bytes | None = message.get("bytes")
        if text is not None:
            if len(text) > s.max_batch_bytes:
                raise RecordTooLargeError(
                    f"frame of {len(text)} characters exceeds the limit of {s.max_batch_bytes}"
                )
            fid, batch = self.rt.codec.decode_ws_text_frame(
                text,
                ring_size=s.ring_size,
                max_sample_bytes=s.max_sample_bytes,
                max_samples=self.rt.codec.max_samples(s.max_batch_bytes),
            )
        elif data is not None:
            fid = frame_no
            if len(data) > s.max_batch_bytes:
                raise RecordTooLargeError(
                    f"frame of {len(data)} bytes exceeds the limit of {s.max_batch_bytes}"
                )
            batch = validate_binary_batch(
                data, ring_size=s.ring_size, max_sample_bytes=s.max_sample_bytes
            )
        else:
            raise InvalidBatchError("frame carries neither text nor bytes")
        return fid, batch

    def _decode_any(self, message: Mapping[str, Any], frame_no: int) -> tuple[Any, EncodedBatch]:
        try:
            return self._decode(message, frame_no)
        except RingbridgeError:
            raise
        except Exception as exc:
            # Whatever the decoder raised, this frame gets an error ack and
            # the connection lives on.
            log.warning("frame decoder failed", exc_info=exc)
            raise SampleError(f"frame could not be decoded: {type(exc).__name__}", -1) from exc

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
            frame_no = self.frames
            self.frames += 1
            text: str | None = message.get("text")
            is_text = text is not None
            fid: Any = None if is_text else frame_no
            item: _Pending
            try:
                size = len(message.get("text") or message.get("bytes") or b"")
                if size > THREAD_DECODE_BYTES:
                    fid, batch = await asyncio.to_thread(self._decode_any, message, frame_no)
                else:
                    fid, batch = self._decode_any(message, frame_no)
                del message
                check_batch_size(batch, self.rt.settings.max_batch_bytes)
                credit = self.read_credit.split(
                    batch.nbytes, loop.time() + self.rt.settings.submit_timeout
                )
                fut = self.rt.producer.enqueue(batch, credit)
                # If the connection dies first, nobody awaits this ack.
                fut.add_done_callback(_retrieve)
                item = (fid, fut)
            except RingbridgeError as exc:
                self.rt.rejections.add(exc.code)
                if is_text and fid is None:
                    # Refused before or while decoding: the codec salvaged
                    # the id, or it is read back here (frames over the limit).
                    fid = frame_id_of(exc)
                    if fid is None and text is not None:
                        fid = frame_id_from(text)
                item = (fid, exc)
            self.pending.put_nowait(item)

    async def _write(self) -> None:
        while True:
            entry = await self.pending.get()
            if entry is _END:
                return
            assert isinstance(entry, tuple)
            fid, item = entry
            if isinstance(item, RingbridgeError):
                msg: dict[str, Any] = {"id": fid, "error": error_payload(item)}
            else:
                try:
                    # Shielded: if this connection dies while we wait, the
                    # batch must still commit in its turn, not be cancelled
                    # behind later batches that do commit.
                    ack = await asyncio.shield(item)
                except RingbridgeError as exc:
                    self.rt.rejections.add(exc.code)
                    msg = {"id": fid, "error": error_payload(exc)}
                else:
                    if self.wait == "consumed":
                        ack = await self.rt.producer.wait_consumed(ack, self.consume_timeout)
                    msg = {
                        "id": fid,
                        "accepted": ack.count,
                        "first_seq": ack.first_seq,
                        "last_seq": ack.last_seq,
                        "state": ack.state,
                    }
            await self.ws.send_text(_encode(msg).decode())
            self.window.release()


@router.websocket("/v1/stream")
async def stream(ws: WebSocket) -> None:
    try:
        rt = runtime_of(ws.app)
    except RingbridgeError:
        await ws.close(CLOSE_TRY_AGAIN, "service not running")
        return
    try:
        check_token(ws, rt.settings.token)
        wait, consume_timeout = _handshake_wait(ws, rt)
        if rt.streams.stopping:
            raise StoppingError("the service is stopping and takes no new streams")
        # One frame's worth, before any frame is read; no deadline of its own.
        credit = rt.producer.admit(rt.settings.ws_frame_bytes, float("inf"))
    except RingbridgeError as exc:
        # Refused in the HTTP handshake (401/403/503 with the usual error
        # body), which clients report far better than an accepted-then-closed
        # socket.
        rt.rejections.add(exc.code)
        await ws.send_denial_response(error_response(exc, rt.settings.retry_after))
        return
    try:
        await ws.accept()
        s = _Stream(ws, rt, credit, wait, consume_timeout)
        rt.streams.add(s)
        try:
            await s.run()
        finally:
            rt.streams.discard(s)
    finally:
        credit.release()
