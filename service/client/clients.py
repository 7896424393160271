"""``Client`` and ``AsyncClient``: batches over HTTP, streams over the WebSocket, events out.

Retries follow the contract, never guess: a batch is sent again only when
the server cannot have committed it --

- the connection could not be opened (refused, DNS, connect timeout):
  nothing was sent;
- the server answered 503 (ring full past the timeout, queue full,
  stopping): nothing of the batch was committed; wait ``Retry-After``.

Everything else is final. In particular a 202 (committed, not consumed in
time) is an :class:`Ack` with ``state == "committed"``, and a connection
that fails *after* the body was sent raises :class:`OutcomeUnknownError`:
the batch may be in the ring, and sending it again could commit it twice.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx

from .. import wire
from ..closing import Closing
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

    def _post_args(self, body: Body, wait: WaitFor, timeout: float | None) -> dict[str, Any]:
        return {
            "url": self.url.http("/v1/samples"),
            "content": body.payload,
            "headers": {"Content-Type": body.content_type},
            "params": wire.query_params(wait, timeout),
            "timeout": self._read_timeout(timeout),
        }

    def _lost(self, exc: httpx.TransportError) -> OutcomeUnknownError:
        return OutcomeUnknownError(
            f"POST {self.url.http('/v1/samples')}: {type(exc).__name__}: {exc} after "
            "the batch was sent; it may have been committed, so it is not sent again"
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
        if isinstance(exc, ServerUnreachableError):
            return True
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
    ) -> Ack:
        """POST one batch; the :class:`Ack` once it is committed (or consumed).

        ``timeout``: how long the server may wait for ring space (and for
        consumption); default the server's ``--submit-timeout``.
        """
        body = encode(samples)
        attempt = 0
        while True:
            try:
                r = self._http.post(**self._post_args(body, wait, timeout))
            except _NOT_SENT as exc:
                err: ClientError = self._unreachable(exc)
            except httpx.TransportError as exc:
                raise self._lost(exc) from exc
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


class AsyncClient(_Base):
    """asyncio client. ``async with AsyncClient(url) as c: await c.send([...])``."""

    def __init__(self, url: str | None = None, **kw: Any) -> None:
        super().__init__(url, **kw)
        self._http = httpx.AsyncClient(headers=_headers(self.token), timeout=self.timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def send(
        self,
        samples: Iterable[SampleLike] | bytes,
        *,
        wait: WaitFor = "committed",
        timeout: float | None = None,
    ) -> Ack:
        """As :meth:`Client.send`."""
        body = encode(samples)
        attempt = 0
        while True:
            try:
                r = await self._http.post(**self._post_args(body, wait, timeout))
            except _NOT_SENT as exc:
                err: ClientError = self._unreachable(exc)
            except httpx.TransportError as exc:
                raise self._lost(exc) from exc
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
