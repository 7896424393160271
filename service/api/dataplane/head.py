"""A request's head, parsed by httptools, and whether the data plane serves it.

The head is cut at its ``\\r\\n\\r\\n`` and fed whole to a fresh
``httptools.HttpRequestParser`` (the parser uvicorn uses): it checks the
syntax and the framing, the data plane only reads the few headers it needs.
The body never goes through the parser -- its bytes land where the data
plane puts them.
"""

from __future__ import annotations

from typing import Final

import httptools

__all__ = ["POST_SAMPLES", "STREAM", "Head", "parse_head", "route_of"]

#: What the data plane serves; everything else goes to uvicorn's protocol.
POST_SAMPLES: Final = "post"
STREAM: Final = "stream"


class Head:
    """The parts of a request head the data plane reads (httptools' callbacks fill it)."""

    __slots__ = (
        "authorization",
        "chunked",
        "close",
        "connection",
        "content_length",
        "content_type",
        "expect_continue",
        "http11",
        "key",
        "method",
        "path",
        "plan",
        "query",
        "upgrade",
        "url",
    )

    def __init__(self) -> None:
        self.url = b""
        self.method = b""
        self.path = b""
        self.query = b""
        self.content_type: str | None = None
        self.content_length: str | None = None
        self.authorization: str | None = None
        self.connection = b""
        self.upgrade = b""
        self.chunked = False
        self.expect_continue = False
        self.close = False
        self.http11 = True
        self.key: str | None = None  # Idempotency-Key, as sent
        # What a request with this head is admitted with, once worked out
        # (see post.PostRequest): heads repeat, and are cached (parse_head).
        self.plan: tuple[object, ...] | None = None

    # httptools callbacks

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        n = name.lower()
        if n == b"content-type":
            self.content_type = value.decode("latin-1")
        elif n == b"content-length":
            # Two of them are refused by the parser when they differ.
            self.content_length = value.decode("latin-1")
        elif n == b"authorization":
            self.authorization = value.decode("latin-1")
        elif n == b"transfer-encoding":
            self.chunked = True  # any coding: not ours (uvicorn takes chunked bodies)
        elif n == b"expect":
            self.expect_continue = value.lower() == b"100-continue"
        elif n == b"connection":
            self.connection = value.lower()
        elif n == b"upgrade":
            self.upgrade = value.lower()
        elif n == b"idempotency-key":
            self.key = value.decode("latin-1")


#: Heads seen lately, by their bytes: a client sends the same head again and
#: again (same path, query, headers, length), and a head's parse depends on
#: its bytes alone. Bounded: cleared when full.
_CACHE: dict[bytes, Head | None] = {}
CACHE_HEADS: Final = 512
CACHE_HEAD_BYTES: Final = 2048


def parse_head(data: bytes) -> Head | None:
    """The head ``data`` (up to and including its blank line), or None when
    httptools refuses it (uvicorn then answers it as it would). Cached."""
    try:
        return _CACHE[data]
    except KeyError:
        pass
    head = _parse(data)
    if len(data) <= CACHE_HEAD_BYTES:
        if len(_CACHE) >= CACHE_HEADS:
            _CACHE.clear()
        _CACHE[data] = head
    return head


def _parse(data: bytes) -> Head | None:
    head = Head()
    parser = httptools.HttpRequestParser(head)
    try:
        parser.feed_data(data)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError:
        return None
    head.method = parser.get_method()
    head.http11 = parser.get_http_version() == "1.1"
    head.close = not parser.should_keep_alive()
    try:
        parsed = httptools.parse_url(head.url)
    except httptools.HttpParserInvalidURLError:
        return None
    head.path = parsed.path or b""
    head.query = parsed.query or b""
    return head


def route_of(head: Head) -> str | None:
    """:data:`POST_SAMPLES`, :data:`STREAM`, or None: uvicorn's (and FastAPI's) request.

    Only the exact paths as sent, and no chunked body (the ASGI handler of
    the same path takes those).
    """
    if head.method == b"POST" and head.path == b"/v1/samples" and not head.chunked:
        return POST_SAMPLES
    if (
        head.method == b"GET"
        and head.path == b"/v1/stream"
        and head.upgrade == b"websocket"
        and b"upgrade" in head.connection
    ):
        return STREAM
    return None
