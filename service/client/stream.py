"""Pipelined batches over ``WS /v1/stream``, one ack per batch, in order.

The server answers every frame in the order it was sent, so the n-th answer
belongs to the n-th frame: a stream keeps its frames in flight in a FIFO and
hands each answer to the oldest one. Every frame, text or binary, takes the
next 0-based number on the connection; that number is the batch's id (text
frames carry it in ``"id"``, binary frames are numbered by the server in the
same way), and each ack's id is checked against it.

At most ``window`` batches are un-acknowledged: ``send`` waits for a slot.
A batch's result is a future: an :class:`Ack`, or a :class:`RejectedError`
for an error ack (the stream stays open). If the connection ends first, the
batches still in flight fail with :class:`OutcomeUnknownError`: the server
commits what it had enqueued even when the client is gone, so they may be in
the ring. Nothing is resent automatically; opening the connection is retried
like an HTTP send (refused connection, 503 at the handshake).

``wait="consumed"`` (a query parameter of the handshake) makes every ack
wait until the kernel's consumer has passed the batch, as over HTTP.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
import time
from collections import deque
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlencode

from .. import wire
from ..errors import ClientError, OutcomeUnknownError, RejectedError
from ..wire import Ack, WaitFor
from .acks import error_from_body, ws_ack
from .samples import SampleLike, encode, ws_text_frame

if TYPE_CHECKING:
    from websockets.asyncio.client import ClientConnection as AsyncConnection
    from websockets.sync.client import ClientConnection as SyncConnection

    from .clients import AsyncClient, Client, _Base

Frame = str | bytes


def _frame(number: int, samples: Iterable[SampleLike] | bytes) -> tuple[Frame, int]:
    """The frame for batch ``number``: binary when every sample is bytes, else text."""
    if isinstance(samples, bytes | bytearray | memoryview):
        body = encode(samples)
        return body.payload, body.count
    items = list(samples)
    if items and all(isinstance(s, bytes | bytearray | memoryview) for s in items):
        body = encode(items)
        return body.payload, body.count
    return ws_text_frame(number, items)


def _stream_url(client: _Base, wait: WaitFor) -> str:
    return client.url.ws("/v1/stream") + "?" + urlencode(wire.query_params(wait, None))


def _handshake_error(client: _Base, exc: BaseException) -> ClientError | None:
    """The client error for a failed opening handshake, or None if not one of ours."""
    from websockets.exceptions import InvalidStatus

    if isinstance(exc, InvalidStatus):
        r = exc.response
        return error_from_body(r.status_code, bytes(r.body or b""), r.headers.get("Retry-After"))
    if isinstance(exc, OSError | TimeoutError):
        return client._unreachable(exc)
    return None


def _connect_kwargs(client: _Base) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {client.token}"} if client.token else None
    # permessage-deflate off: on binary sample frames it costs ~60x throughput.
    return {
        "compression": None,
        "additional_headers": headers,
        "open_timeout": client.timeout,
        "max_size": 1 << 20,
    }


def _closed_error(number: int, exc: BaseException) -> OutcomeUnknownError:
    return OutcomeUnknownError(
        f"batch {number}: the connection closed before its ack ({exc}); the server may "
        "have committed it"
    )


def _send_error(number: int, exc: BaseException) -> ClientError:
    from websockets.exceptions import ConnectionClosed

    if isinstance(exc, ConnectionClosed):
        # websockets refuses before writing anything: the frame was not sent.
        return ClientError(f"batch {number} not sent: the connection is closed ({exc})")
    return OutcomeUnknownError(f"batch {number}: sending failed ({exc}); it may have arrived")


def _ack_for(number: int, raw: Frame) -> Ack:
    fid, result = ws_ack(raw)
    if isinstance(fid, int) and fid != number:
        raise ClientError(f"acks out of order: expected batch {number}, got {fid!r}")
    if isinstance(result, RejectedError):
        result.batch = number
        raise result
    return result


def _settle(
    fut: asyncio.Future[Ack] | concurrent.futures.Future[Ack], number: int, raw: Frame
) -> None:
    """Resolves batch ``number``'s future with its ack, or its rejection as the exception.

    An ack out of order (ClientError) propagates: the stream cannot go on.
    """
    try:
        ack = _ack_for(number, raw)
    except RejectedError as exc:
        if not fut.done():  # cancelled when its send failed
            fut.set_exception(exc)
    else:
        if not fut.done():
            fut.set_result(ack)


class AsyncStream:
    """``async with client.stream(window=16) as s: fut = await s.send([...])``."""

    def __init__(self, client: AsyncClient, window: int, wait: WaitFor) -> None:
        if window < 1:
            raise ClientError(f"window must be at least 1, not {window}")
        self.client = client
        self.window = window
        self.wait = wait
        self.sent = 0
        self._ws: AsyncConnection | None = None
        self._slots = asyncio.Semaphore(window)
        self._inflight: deque[tuple[int, asyncio.Future[Ack]]] = deque()
        self._reader: asyncio.Task[None] | None = None
        self._closed: BaseException | None = None

    @classmethod
    def connect(cls, client: AsyncClient, *, window: int, wait: WaitFor) -> AsyncStream:
        return cls(client, window, wait)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                await self.flush()
        finally:
            await self.close()

    async def open(self) -> None:
        from websockets.asyncio.client import connect

        url = _stream_url(self.client, self.wait)
        attempt = 0
        while True:
            try:
                self._ws = await connect(url, **_connect_kwargs(self.client))
                break
            except Exception as exc:
                err = _handshake_error(self.client, exc)
                if err is None:
                    raise
                if not self.client._may_retry(attempt, err):
                    raise err from exc
                await asyncio.sleep(self.client._delay(attempt, err))
                attempt += 1
        self._reader = asyncio.create_task(self._read(), name="ringbridge-client-acks")

    async def send(self, samples: Iterable[SampleLike] | bytes) -> asyncio.Future[Ack]:
        """Send one batch (waits for a window slot); its ack's future."""
        frame, _ = _frame(self.sent, samples)
        return await self.send_frame(frame)

    async def send_frame(self, frame: Frame) -> asyncio.Future[Ack]:
        """Send one frame as it is: a text frame whose ``"id"`` is its frame
        number (:attr:`sent`), or a binary batch in record format."""
        if self._ws is None:
            raise ClientError("the stream is not open")
        await self._slots.acquire()
        if self._closed is not None:
            self._slots.release()
            raise _closed_error(self.sent, self._closed)
        number = self.sent
        self.sent += 1
        fut: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._inflight.append((number, fut))
        try:
            await self._ws.send(frame)
        except Exception as exc:
            fut.cancel()
            raise _send_error(number, exc) from exc
        return fut

    async def flush(self) -> None:
        """WaitFor until every batch sent so far has its answer (errors stay in the futures)."""
        if self._inflight:
            await asyncio.wait([f for _, f in self._inflight])

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await asyncio.wait({self._reader})
        self._fail_inflight(ClientError("stream closed"))

    def _fail_inflight(self, exc: BaseException) -> None:
        while self._inflight:
            number, fut = self._inflight.popleft()
            if not fut.done():
                fut.set_exception(_closed_error(number, exc))
                fut.exception()  # the caller may never look: not an "unretrieved" error
            self._slots.release()

    async def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed

        assert self._ws is not None
        try:
            async for raw in self._ws:
                if not self._inflight:
                    raise ClientError(f"an ack for no batch: {raw!r:.200}")
                number, fut = self._inflight.popleft()
                _settle(fut, number, raw)
                self._slots.release()
        except (ConnectionClosed, ClientError, OSError) as exc:
            self._closed = exc
        else:
            self._closed = ClientError(
                f"connection closed (code {self._ws.close_code}: {self._ws.close_reason})"
            )
        self._fail_inflight(self._closed)


class Stream:
    """Blocking stream: ``with client.stream() as s: s.send([...]).result()``.

    A thread reads the acks; ``send`` returns a :class:`concurrent.futures.Future`.
    """

    def __init__(self, client: Client, window: int, wait: WaitFor) -> None:
        if window < 1:
            raise ClientError(f"window must be at least 1, not {window}")
        self.client = client
        self.window = window
        self.wait = wait
        self.sent = 0
        self._ws: SyncConnection | None = None
        self._slots = threading.Semaphore(window)
        self._lock = threading.Lock()
        self._inflight: deque[tuple[int, concurrent.futures.Future[Ack]]] = deque()
        self._reader: threading.Thread | None = None
        self._closed: BaseException | None = None

    @classmethod
    def open(cls, client: Client, *, window: int, wait: WaitFor) -> Stream:
        stream = cls(client, window, wait)
        stream._connect()
        return stream

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is None:
                self.flush()
        finally:
            self.close()

    def _connect(self) -> None:
        from websockets.sync.client import connect

        url = _stream_url(self.client, self.wait)
        attempt = 0
        while True:
            try:
                # Entered by hand: the stream outlives this call (and a
                # bare connect() is deprecated in recent websockets).
                self._ws = connect(url, **_connect_kwargs(self.client)).__enter__()
                break
            except Exception as exc:
                err = _handshake_error(self.client, exc)
                if err is None:
                    raise
                if not self.client._may_retry(attempt, err):
                    raise err from exc
                time.sleep(self.client._delay(attempt, err))
                attempt += 1
        self._reader = threading.Thread(
            target=self._read, name="ringbridge-client-acks", daemon=True
        )
        self._reader.start()

    def send(self, samples: Iterable[SampleLike] | bytes) -> concurrent.futures.Future[Ack]:
        """Send one batch (blocks for a window slot); its ack's future."""
        frame, _ = _frame(self.sent, samples)
        return self.send_frame(frame)

    def send_frame(self, frame: Frame) -> concurrent.futures.Future[Ack]:
        """As :meth:`AsyncStream.send_frame`."""
        if self._ws is None:
            raise ClientError("the stream is not open")
        self._slots.acquire()
        fut: concurrent.futures.Future[Ack] = concurrent.futures.Future()
        with self._lock:
            if self._closed is not None:
                self._slots.release()
                raise _closed_error(self.sent, self._closed)
            number = self.sent
            self.sent += 1
            self._inflight.append((number, fut))
        try:
            self._ws.send(frame)
        except Exception as exc:
            fut.cancel()
            raise _send_error(number, exc) from exc
        return fut

    def flush(self) -> None:
        with self._lock:
            pending = [f for _, f in self._inflight]
        concurrent.futures.wait(pending)

    def close(self) -> None:
        if self._ws is not None:
            self._ws.close()
        if self._reader is not None:
            self._reader.join()
        self._fail_inflight(ClientError("stream closed"))

    def _fail_inflight(self, exc: BaseException) -> None:
        with self._lock:
            while self._inflight:
                number, fut = self._inflight.popleft()
                if not fut.done():
                    fut.set_exception(_closed_error(number, exc))
                self._slots.release()

    def _read(self) -> None:
        from websockets.exceptions import ConnectionClosed, ConnectionClosedOK

        assert self._ws is not None
        try:
            while True:
                try:
                    raw = self._ws.recv()
                except ConnectionClosedOK:
                    break
                with self._lock:
                    if not self._inflight:
                        raise ClientError(f"an ack for no batch: {raw!r:.200}")
                    number, fut = self._inflight.popleft()
                _settle(fut, number, raw)
                self._slots.release()
        except (ConnectionClosed, ClientError, OSError) as exc:
            with self._lock:
                self._closed = exc
        else:
            with self._lock:
                self._closed = ClientError(
                    f"connection closed (code {self._ws.close_code}: {self._ws.close_reason})"
                )
        self._fail_inflight(self._closed)
