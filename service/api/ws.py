"""``WS /v1/stream``: pipelined batches over one WebSocket, one ack per batch, in order.

Protocol (DESIGN §4, documented in the README):

- text frame ``{"id": <any JSON>, "samples": [S, ...]}``; binary frame: one
  batch in record format whose id is its 0-based frame number on the
  connection (every frame, text or binary, takes a number);
- the server answers every batch, in the order received:
  ``{"id", "accepted", "first_seq", "last_seq"}`` or
  ``{"id", "error": {"code", "message", "index"}}``. A bad batch gets an error
  ack and the stream stays open.

Two tasks per connection. The *reader* validates each frame and enqueues it
with the producer (enqueue order is commit order), then puts the ack's
future -- or the validation error -- on an ordered list for the *writer*,
which awaits them one by one and sends the acks. A semaphore of
``ws_window`` permits is taken before each read and given back after each
ack is sent: with ``ws_window`` batches un-acked the reader stops calling
``receive()``, the socket buffers fill and TCP pushes back on the client.
Memory per connection is bounded by the window, never by the client.

Batches already enqueued when the client goes away are still committed (the
client may have sent them fire-and-forget); their acks have nobody to go to.
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

from ..codec import EncodedBatch, frame_id_of, validate_binary_batch
from ..errors import InvalidBatchError, RecordTooLargeError, RingbridgeError
from ..producer.task import Ack
from .auth import check_token
from .routes import THREAD_DECODE_BYTES
from .state import Runtime, error_payload, error_response, runtime_of

log = logging.getLogger("ringbridge.ws")
router = APIRouter()
_encode = msgspec.json.Encoder().encode

#: Close code when the service is not running (RFC 6455 "try again later").
CLOSE_TRY_AGAIN = 1013

_Pending = tuple[Any, "asyncio.Future[Ack] | RingbridgeError"]


def _retrieve(fut: asyncio.Future[Ack]) -> None:
    # An ack whose connection is gone is awaited by nobody: mark its
    # exception retrieved so asyncio does not log "exception was never
    # retrieved". Harmless when the writer does await it.
    if not fut.cancelled():
        fut.exception()


class _Stream:
    def __init__(self, ws: WebSocket, rt: Runtime) -> None:
        self.ws = ws
        self.rt = rt
        self.window = asyncio.Semaphore(rt.settings.ws_window)
        self.pending: asyncio.Queue[_Pending] = asyncio.Queue()
        self.frames = 0

    async def run(self) -> None:
        reader = asyncio.create_task(self._read(), name="ringbridge-ws-read")
        writer = asyncio.create_task(self._write(), name="ringbridge-ws-write")
        try:
            # The reader ends on disconnect; the writer only on a send error.
            done, _ = await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                exc = t.exception()
                if exc is not None and not isinstance(exc, WebSocketDisconnect | OSError):
                    log.error("websocket stream failed", exc_info=exc)
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
                text, ring_size=s.ring_size, max_sample_bytes=s.max_sample_bytes
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
        if batch.nbytes > s.max_batch_bytes:
            raise RecordTooLargeError(
                f"batch takes {batch.nbytes} ring bytes, over the limit of {s.max_batch_bytes}"
            )
        return fid, batch

    async def _read(self) -> None:
        while True:
            # Taken before reading: with the window full we stop reading.
            await self.window.acquire()
            message = await self.ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            frame_no = self.frames
            self.frames += 1
            is_text = message.get("text") is not None
            item: _Pending
            try:
                size = len(message.get("text") or message.get("bytes") or b"")
                if size > THREAD_DECODE_BYTES:
                    fid, batch = await asyncio.to_thread(self._decode, message, frame_no)
                else:
                    fid, batch = self._decode(message, frame_no)
                fut = await self.rt.producer.enqueue(batch, timeout=self.rt.settings.submit_timeout)
                # If the connection dies first, nobody awaits this ack.
                fut.add_done_callback(_retrieve)
                item = (fid, fut)
            except RingbridgeError as exc:
                self.rt.rejections.add(exc.code)
                item = (frame_id_of(exc) if is_text else frame_no, exc)
            self.pending.put_nowait(item)

    async def _write(self) -> None:
        while True:
            fid, item = await self.pending.get()
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
                    msg = {
                        "id": fid,
                        "accepted": ack.count,
                        "first_seq": ack.first_seq,
                        "last_seq": ack.last_seq,
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
    except RingbridgeError as exc:
        # Refused in the HTTP handshake (401/403 with the usual error body),
        # which clients report far better than an accepted-then-closed socket.
        await ws.send_denial_response(error_response(exc, rt.settings.retry_after))
        return
    await ws.accept()
    await _Stream(ws, rt).run()
