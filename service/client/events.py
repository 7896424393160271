"""Reading an event map: ``Client.events(map)`` and ``AsyncClient.events(map)``.

Both read ``GET /v1/events?map=NAME`` as Server-Sent Events (plain HTTP:
through any proxy, with the client's own connection settings and token) and
yield each item as the server sent it, a dict:

- an event: ``{"seq", "value"}`` with the map's type, ``{"seq", "data"}``
  (base64) without one;
- a gap: ``{"lost": N, "first_seq", "last_seq"}`` -- this subscriber's buffer
  on the server was full and those events are gone (for this subscriber only).

The subscription exists once ``events()`` returns: every event published from
then on comes, in order. Iteration ends when the server ends the stream (it
stops); a refusal raises :class:`~ringbridge.errors.RejectedError` at once
(404 for a map the server does not read), a server that cannot be reached
:class:`~ringbridge.errors.ServerUnreachableError`, and a stream that breaks
or stays silent past several keep-alives :class:`~ringbridge.errors.ClientError`.
Nothing is resent: a reconnecting client sees the gap in ``seq``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx

from .. import wire
from ..closing import AsyncClosing, Closing
from ..errors import ClientError
from .acks import error_from_body

if TYPE_CHECKING:
    from .clients import _Base

__all__ = ["AsyncEventStream", "EventStream", "SSEDecoder"]

#: Silence longer than this (several keep-alives) means the server is gone.
READ_TIMEOUT = 4 * wire.EVENTS_KEEPALIVE


class SSEDecoder:
    """The ``data`` of each Server-Sent Events message, line by line (comments,
    ``id`` and ``event`` lines are not needed: the JSON says what an item is)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def line(self, line: str) -> str | None:
        """Feeds one line (without its end); the data of a message it completes, or None."""
        if not line:
            data, self._data = self._data, []
            return "\n".join(data) if data else None
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None


def _request(client: _Base, http: httpx.Client | httpx.AsyncClient, name: str) -> httpx.Request:
    return http.build_request(
        "GET",
        client.url.http(wire.EVENTS_PATH),
        params=wire.events_params(name),
        headers={"Accept": "text/event-stream"},
        timeout=httpx.Timeout(client.timeout, read=READ_TIMEOUT),
    )


def _broken(name: str, exc: Exception) -> ClientError:
    if isinstance(exc, httpx.ReadTimeout):
        return ClientError(
            f"events of {name!r}: nothing from the server in {READ_TIMEOUT:.0f} s "
            "(not even a keep-alive): it is gone or unreachable"
        )
    return ClientError(f"events of {name!r}: the stream broke ({type(exc).__name__}: {exc})")


class EventStream(Closing):
    """The items of one event map, as a blocking iterator (``with`` closes it)."""

    def __init__(self, name: str, response: httpx.Response) -> None:
        self.name = name
        self._response = response
        self._lines = response.iter_lines()
        self._sse = SSEDecoder()

    @classmethod
    def open(cls, client: _Base, http: httpx.Client, name: str) -> EventStream:
        try:
            r = http.send(_request(client, http, name), stream=True)
        except httpx.TransportError as exc:
            raise client._unreachable(exc) from exc
        if r.status_code != 200:
            body = r.read()
            r.close()
            raise error_from_body(r.status_code, body, r.headers.get("retry-after"))
        return cls(name, r)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        try:
            for line in self._lines:
                data = self._sse.line(line)
                if data is not None:
                    return wire.read_event(data)
        except httpx.TransportError as exc:
            raise _broken(self.name, exc) from exc
        except httpx.StreamClosed:
            pass
        raise StopIteration

    def close(self) -> None:
        self._response.close()


class AsyncEventStream(AsyncClosing):
    """The items of one event map, as an async iterator (``async with`` closes it)."""

    def __init__(self, name: str, response: httpx.Response) -> None:
        self.name = name
        self._response = response
        self._lines = response.aiter_lines()
        self._sse = SSEDecoder()

    @classmethod
    async def open(cls, client: _Base, http: httpx.AsyncClient, name: str) -> AsyncEventStream:
        try:
            r = await http.send(_request(client, http, name), stream=True)
        except httpx.TransportError as exc:
            raise client._unreachable(exc) from exc
        if r.status_code != 200:
            body = await r.aread()
            await r.aclose()
            raise error_from_body(r.status_code, body, r.headers.get("retry-after"))
        return cls(name, r)

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            async for line in self._lines:
                data = self._sse.line(line)
                if data is not None:
                    return wire.read_event(data)
        except httpx.TransportError as exc:
            raise _broken(self.name, exc) from exc
        except httpx.StreamClosed:
            pass
        raise StopAsyncIteration

    async def aclose(self) -> None:
        await self._response.aclose()
