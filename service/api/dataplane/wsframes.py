"""WebSocket framing (RFC 6455 section 5), the data plane's own: parse a client
frame's header, write the server's frames. No I/O.

Only what a server needs: client frames must be masked, no extension is ever
negotiated (so the RSV bits must be zero), control frames are short and
whole. A violation is a :class:`FrameError` carrying the close code the
connection ends with. The handshake is the ``websockets`` library's
(:mod:`.handshake`); only the hot loop -- frame headers in, acks out -- is
written here.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "BINARY",
    "CLOSE",
    "CONT",
    "PING",
    "PONG",
    "TEXT",
    "FrameError",
    "Head",
    "close_frame",
    "parse_head",
    "server_frame",
]

CONT: Final = 0x0
TEXT: Final = 0x1
BINARY: Final = 0x2
CLOSE: Final = 0x8
PING: Final = 0x9
PONG: Final = 0xA
_KNOWN: Final = frozenset({CONT, TEXT, BINARY, CLOSE, PING, PONG})

#: Close codes (RFC 6455 section 7.4.1).
CLOSE_NORMAL: Final = 1000
CLOSE_PROTOCOL: Final = 1002
CLOSE_INVALID_DATA: Final = 1007
CLOSE_TOO_BIG: Final = 1009

_U16 = struct.Struct("!H")
_U64 = struct.Struct("!Q")


class FrameError(Exception):
    """The peer broke the protocol: the connection closes with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class Head:
    """A client frame's header: ``size`` bytes of it, then ``length`` payload bytes.

    Not frozen (never changed, though): one is made per frame, and a frozen
    dataclass's ``__init__`` costs five times a plain one's on Python 3.11.
    """

    fin: bool
    opcode: int
    length: int
    key: int  # the 4 masking-key bytes, read little-endian (see bpf/wsunmask.c)
    size: int


def parse_head(buf: bytearray | memoryview, start: int, end: int) -> Head | None:
    """The header at ``buf[start:end]``, or None when it has not all arrived."""
    avail = end - start
    if avail < 2:
        return None
    b0, b1 = buf[start], buf[start + 1]
    if b0 & 0x70:
        raise FrameError(CLOSE_PROTOCOL, "reserved bits set (no extension was negotiated)")
    opcode = b0 & 0x0F
    if opcode not in _KNOWN:
        raise FrameError(CLOSE_PROTOCOL, f"unknown opcode {opcode:#x}")
    if not b1 & 0x80:
        raise FrameError(CLOSE_PROTOCOL, "client frames must be masked")
    fin = bool(b0 & 0x80)
    length = b1 & 0x7F
    size = 6
    if length == 126:
        size = 8
        if avail < size:
            return None
        (length,) = _U16.unpack_from(buf, start + 2)
    elif length == 127:
        size = 14
        if avail < size:
            return None
        (length,) = _U64.unpack_from(buf, start + 2)
        if length >> 63:
            raise FrameError(CLOSE_PROTOCOL, "frame length with the top bit set")
    elif avail < size:
        return None
    if opcode >= CLOSE and (length > 125 or not fin):
        raise FrameError(CLOSE_PROTOCOL, "control frames are whole and at most 125 bytes")
    key = int.from_bytes(buf[start + size - 4 : start + size], "little")
    return Head(fin, opcode, length, key, size)


def unmask_bytes(data: bytes | bytearray | memoryview, key: int) -> bytes:
    """A short payload unmasked in Python (control frames: at most 125 bytes)."""
    k = key.to_bytes(4, "little")
    return bytes(b ^ k[i & 3] for i, b in enumerate(data))


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, whole server frame."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 1 << 16:
        return bytes((first, 126)) + _U16.pack(n) + payload
    return bytes((first, 127)) + _U64.pack(n) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame: the code, and a reason cut to fit a control frame."""
    text = reason.encode()[:123].decode(errors="ignore").encode()
    return server_frame(CLOSE, _U16.pack(code) + text)
