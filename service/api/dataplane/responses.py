"""The data plane's HTTP answers, as bytes: acks from templates, errors from the wire rules.

Everything an answer says comes from :mod:`ringbridge.wire` (the ack body,
the error body, each code's status and headers), as it does on the FastAPI
side; only the framing is done here, once per answer, with the status line
and fixed headers encoded ahead of time.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Final

from uvicorn.server import ServerState

from ... import wire
from ...errors import RingbridgeError
from ...runtime import Runtime
from ...wire import Ack, ErrorInfo, WaitFor

__all__ = ["CONTINUE", "Answers"]

#: The interim answer to ``Expect: 100-continue`` once a body is admitted.
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"

_JSON_CT: Final = b"content-type: application/json\r\n"
_REPLAYED: Final = f"{wire.REPLAYED.lower()}: true\r\n".encode()


def _status_line(status: int) -> bytes:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


_STATUS: Final = {s: _status_line(s) for s in range(100, 600)}


class Answers:
    """Answers of one server: its ``Retry-After``, and uvicorn's default headers
    (``date``, ``server``), which uvicorn renews once a second in its state."""

    def __init__(self, retry_after: int, server_state: ServerState) -> None:
        self.retry_after = retry_after
        self._state = server_state

    def _head(self, status: int, length: int, close: bool, extra: bytes = b"") -> bytes:
        parts = [_STATUS[status]]
        for name, value in self._state.default_headers:
            parts += [name, b": ", value, b"\r\n"]
        parts += [
            _JSON_CT,
            extra,
            b"content-length: %d\r\n" % length,
            b"connection: close\r\n\r\n" if close else b"\r\n",
        ]
        return b"".join(parts)

    def ack(self, ack: Ack, wait: WaitFor, close: bool = False, replayed: bool = False) -> bytes:
        """200 (or 202: ``wait=consumed`` ran out) with the ack body; ``replayed``: the
        ack of a keyed batch's first sending (``Idempotent-Replayed: true``)."""
        body = wire.ack_json(ack)
        extra = _REPLAYED if replayed else b""
        return self._head(wire.ack_status(ack, wait), len(body), close, extra) + body

    def error(self, rt: Runtime | None, exc: RingbridgeError, close: bool = False) -> bytes:
        """The answer to a refused batch or handshake, counted by its code (as
        :func:`ringbridge.api.ingest.refuse` counts it)."""
        if rt is not None:
            rt.rejections.add(exc.code)
        err = ErrorInfo.of(exc)
        body = wire.error_json(err)
        headers = wire.error_headers(err.code, self.retry_after)
        extra = b"".join(f"{k.lower()}: {v}\r\n".encode() for k, v in headers.items())
        return self._head(wire.rule(err.code).status, len(body), close, extra) + body
