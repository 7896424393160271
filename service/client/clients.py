"""``Client`` and ``AsyncClient``: batches over HTTP, streams over the WebSocket, events out.

Retries follow the contract, never guess. Every batch goes out under an
``Idempotency-Key`` of its own (:func:`new_key`: 128 random bits),
and is sent again, under the same key, when

- the connection could not be opened (refused, DNS, connect timeout):
  nothing was sent;
- the server answered 503 (ring full past the timeout, no credit,
  stopping, the first sending still in flight): nothing of the batch was
  committed; wait ``Retry-After``;
- the connection failed *after* the body was sent (reset, closed, no answer
  in time): the batch may be committed, and the key makes the server answer
  a resend with the first ack instead of committing it again.

Everything else is final. A 202 (committed, not consumed in time) is an
:class:`Ack` with ``state == "committed"``. When every sending lost its
connection, :class:`OutcomeUnknownError` carries the key: sending the batch
again later with ``send(..., key=exc.key)`` still commits it at most once,
while the server remembers the key (its last ``--idempotency-keys`` keyed
batches).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import httpx

from .. import wire
from ..closing import AsyncClosing, Closing
from ..errors import ClientError, OutcomeUnknownError, RejectedError, ServerUnreachableError
from ..wire import Ack, WaitFor
from .acks import error_from_body
from .events import AsyncEventStream, EventStream
from .samples import Body, SampleLike, encode
from .urls import TOKEN_ENV, ServerURL, default_url, unreachable_hint

if TYPE_CHECKING:
    from .stream import AsyncStream, Stream

#: Connection-level failures that happen before anything is sent.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def new_key() -> str:
    """A fresh ``Idempotency-Key`` for one batch: 128 random bits, hex."""
    return uuid.uuid4().hex


def _headers(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


class _Base:
    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        backoff: float = 0.25,
        max_retry_wait: float = 30.0,
    ) -> None:
        """``url``: the server's base URL (default ``$RINGBRIDGE_URL`` or
        http://127.0.0.1:8470). ``token``: bearer token (default
        ``$RINGBRIDGE_TOKEN``). ``timeout``: seconds to wait for an answer,
        on top of the server-side ``timeout`` of a ``send``. ``retries``:
        how many times a batch is sent again when that is safe."""
        self.url = ServerURL.parse(url or default_url())
        self.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_retry_wait = max_retry_wait

    def _may_retry(self, attempt: int, exc: ClientError) -> bool:
        return attempt < self.retries and self._safe_to_retry(exc)

    def _delay(self, attempt: int, exc: ClientError) -> float:
        if isinstance(exc, RejectedError) and exc.retry_after is not None:
            return min(exc.retry_after, self.max_retry_wait)
        delay: float = self.backoff * 2**attempt
        return min(delay, self.max_retry_wait)

    def _post_args(
        self, body: Body, wait: WaitFor, timeout: float | None, key: str
    ) -> dict[str, Any]:
        return {
            "url": self.url.http("/v1/samples"),
            "content": body.payload,
            "headers": {"Content-Type": body.content_type, wire.IDEMPOTENCY_KEY: key},
            "params": wire.query_params(wait, timeout),
            "timeout": self._read_timeout(timeout),
        }

    def _lost(self, exc: httpx.TransportError, key: str, attempt: int) -> OutcomeUnknownError:
        return OutcomeUnknownError(
            f"POST {self.url.http('/v1/samples')}: {type(exc).__name__}: {exc} after "
            f"the batch was sent ({attempt + 1} times, {wire.IDEMPOTENCY_KEY} {key}); it may "
            "have been committed: send it again with the same key to be answered",
            key=key,
        )

    def _unreachable(self, exc: Exception) -> ServerUnreachableError:
        reason = str(exc) or type(exc).__name__
        return ServerUnreachableError(self.url.base, reason, unreachable_hint())

    def _answer(self, r: httpx.Response) -> Ack:
        if r.status_code in (200, 202):
            return wire.read_ack(r.json())
        raise error_from_body(r.status_code, r.content, r.headers.get("retry-after"))

    @staticmethod
    def _stats(r: httpx.Response) -> dict[str, Any]:
        if r.status_code != 200:
            raise error_from_body(r.status_code, r.content, r.headers.get("retry-after"))
        stats: dict[str, Any] = r.json()
        return stats

    def _read_timeout(self, timeout: float | None) -> httpx.Timeout:
        return httpx.Timeout(self.timeout + (timeout or 0.0), connect=min(self.timeout, 10.0))

    @staticmethod
    def _safe_to_retry(exc: ClientError) -> bool:
        if isinstance(exc, ServerUnreachableError | OutcomeUnknownError):
            return True  # nothing was sent / the key keeps a resend from committing twice
        return isinstance(exc, RejectedError) and exc.retryable


class Client(_Base, Closing):
    """Blocking client. ``with Client(url) as c: c.send([{"kind": 1, "value": 2}])``."""

    def __init__(self, url: str | None = None, **kw: Any) -> None:
        super().__init__(url, **kw)
        self._http = httpx.Client(headers=_headers(self.token), timeout=self.timeout)

    def close(self) -> None:
        self._http.close()

    def send(
        self,
        samples: Iterable[SampleLike] | bytes,
        *,
        wait: WaitFor = "committed",
        timeout: float | None = None,
        key: str | None = None,
    ) -> Ack:
        """POST one batch; the :class:`Ack` once it is committed (or consumed).

        ``timeout``: how long the server may wait for ring space (and for
        consumption); default the server's ``--submit-timeout``. ``key``: the
        batch's ``Idempotency-Key`` (default: a new one); give the key of an
        :class:`OutcomeUnknownError` to learn that batch's fate.
        """
        body = encode(samples)
        key = key if key is not None else new_key()
        attempt = 0
        while True:
            try:
                r = self._http.post(**self._post_args(body, wait, timeout, key))
            except _NOT_SENT as exc:
                err: ClientError = self._unreachable(exc)
            except httpx.TransportError as exc:
                err = self._lost(exc, key, attempt)
            else:
                try:
                    return self._answer(r)
                except RejectedError as exc:
                    err = exc
            if not self._may_retry(attempt, err):
                raise err
            time.sleep(self._delay(attempt, err))
            attempt += 1

    def stats(self) -> dict[str, Any]:
        """``GET /v1/stats``: service, ring and kernel counters."""
        url = self.url.http("/v1/stats")
        try:
            r = self._http.get(url)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        return self._stats(r)

    def stream(self, *, window: int = 16, wait: WaitFor = "committed") -> Stream:
        """An open :class:`~ringbridge.client.stream.Stream` over ``WS /v1/stream``."""
        from .stream import Stream

        return Stream.open(self, window=window, wait=wait)

    def events(self, map_name: str) -> EventStream:
        """Subscribes to the server's event map ``map_name``: ``with c.events("replies")
        as events: for ev in events: ...`` (see :mod:`ringbridge.client.events`)."""
        return EventStream.open(self, self._http, map_name)


class AsyncClient(_Base, AsyncClosing):
    """asyncio client. ``async with AsyncClient(url) as c: await c.send([...])``."""

    def __init__(self, url: str | None = None, **kw: Any) -> None:
        super().__init__(url, **kw)
        self._http = httpx.AsyncClient(headers=_headers(self.token), timeout=self.timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(
        self,
        samples: Iterable[SampleLike] | bytes,
        *,
        wait: WaitFor = "committed",
        timeout: float | None = None,
        key: str | None = None,
    ) -> Ack:
        """As :meth:`Client.send`."""
        body = encode(samples)
        key = key if key is not None else new_key()
        attempt = 0
        while True:
            try:
                r = await self._http.post(**self._post_args(body, wait, timeout, key))
            except _NOT_SENT as exc:
                err: ClientError = self._unreachable(exc)
            except httpx.TransportError as exc:
                err = self._lost(exc, key, attempt)
            else:
                try:
                    return self._answer(r)
                except RejectedError as exc:
                    err = exc
            if not self._may_retry(attempt, err):
                raise err
            await asyncio.sleep(self._delay(attempt, err))
            attempt += 1

    async def stats(self) -> dict[str, Any]:
        url = self.url.http("/v1/stats")
        try:
            r = await self._http.get(url)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        return self._stats(r)

    def stream(self, *, window: int = 16, wait: WaitFor = "committed") -> AsyncStream:
        """``async with client.stream() as s:`` an :class:`AsyncStream` over ``WS /v1/stream``."""
        from .stream import AsyncStream

        return AsyncStream.connect(self, window=window, wait=wait)

    async def events(self, map_name: str) -> AsyncEventStream:
        """As :meth:`Client.events`: ``async with await c.events("replies") as events:
        async for ev in events: ...``."""
        return await AsyncEventStream.open(self, self._http, map_name)
