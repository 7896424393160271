"""The keep-alive rule: an idle connection is closed -- unless its next request is waiting.

A keep-alive timer may fire with a request already received and not yet
read: sent at that very moment, or while the process was stopped past the
timeout (SIGSTOP, a paused VM: on resume, timers run before reads). Closing
a socket with unread bytes resets the connection, and the client, whose
whole body went out, cannot tell that it was never read (#19, item 4). With
bytes waiting the connection stays, and they are read. Both HTTP protocols
follow it: the data plane's (:mod:`.dataplane.connection`) and uvicorn's,
for the connections handed to it (:class:`.connguard.GuardedHttpProtocol`).
"""

from __future__ import annotations

import asyncio
import fcntl
import sys
import termios

__all__ = ["bytes_waiting", "queued_bytes"]


def bytes_waiting(transport: asyncio.BaseTransport) -> bool:
    """Whether bytes were received on the transport's socket and not read yet
    (also: whether a region's next bytes already wait, ``RegionOwner.arriving``)."""
    if transport.is_closing():
        return False
    sock = transport.get_extra_info("socket")
    try:
        return queued_bytes(sock.fileno()) > 0
    except (AttributeError, ValueError):
        return False


def queued_bytes(fd: int) -> int:
    """Bytes received on socket ``fd`` and not read yet (0 when it cannot tell)."""
    try:
        raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    except OSError:
        return 0
    return max(0, int.from_bytes(raw, sys.byteorder, signed=True))
