"""One URL convention for every client: the server's base URL.

Every client (``ringbridge.Client``, ``push``, ``stats``) takes the server's
base URL, ``http[s]://host:port`` (default :data:`DEFAULT_URL`, or
``$RINGBRIDGE_URL``), and derives the endpoints from it: ``/v1/samples``,
``/v1/stats`` and ``/v1/events`` over HTTP, ``ws[s]://host:port/v1/stream`` for
the stream. A
``ws[s]://`` URL is accepted too (its scheme maps back to http[s]), and so is
a full endpoint URL (``.../v1/stream``), whose endpoint path is dropped. A
path prefix is kept, for a service behind a reverse proxy that mounts it
under one (``https://gw/ringbridge``). A bare ``host:port`` means http.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from ..errors import ClientError

DEFAULT_URL = "http://127.0.0.1:8470"
URL_ENV = "RINGBRIDGE_URL"
TOKEN_ENV = "RINGBRIDGE_TOKEN"

_TO_HTTP = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
_ENDPOINTS = ("/v1/stream", "/v1/samples", "/v1/stats", "/v1/events", "/metrics")


def default_url() -> str:
    """``$RINGBRIDGE_URL`` if set, else :data:`DEFAULT_URL`."""
    return os.environ.get(URL_ENV) or DEFAULT_URL


@dataclass(frozen=True)
class ServerURL:
    """The server's base URL and the endpoints derived from it."""

    base: str  # http[s]://host:port[/prefix], no trailing slash

    @classmethod
    def parse(cls, url: str) -> ServerURL:
        text = url.strip()
        if not text:
            raise ClientError("empty server URL")
        if "://" not in text:
            text = "http://" + text
        parts = urlsplit(text)
        scheme = _TO_HTTP.get(parts.scheme.lower())
        if scheme is None:
            raise ClientError(
                f"server URL {url!r}: scheme {parts.scheme!r} is not one of http, https, "
                "ws, wss (give the server's base URL, e.g. http://127.0.0.1:8470)"
            )
        if not parts.hostname:
            raise ClientError(f"server URL {url!r} names no host")
        try:
            parts.port  # noqa: B018 -- validates the port
        except ValueError as exc:
            raise ClientError(f"server URL {url!r}: {exc}") from None
        path = parts.path.rstrip("/")
        for endpoint in _ENDPOINTS:
            if path.endswith(endpoint):
                path = path[: -len(endpoint)]
                break
        return cls(urlunsplit((scheme, parts.netloc, path, "", "")))

    @property
    def secure(self) -> bool:
        return self.base.startswith("https:")

    def http(self, path: str) -> str:
        """``base`` + ``path`` (``path`` starts with ``/``)."""
        return self.base + path

    def ws(self, path: str = "/v1/stream") -> str:
        return ("wss" if self.secure else "ws") + self.base[self.base.index(":") :] + path

    def __str__(self) -> str:
        return self.base


def unreachable_hint() -> str:
    """What to check when nothing answers at a server URL."""
    return (
        "is `ringbridge serve` running and listening there? Point clients at it "
        f"with --url or ${URL_ENV} (default {DEFAULT_URL})"
    )
