"""TCP ACKs that do not wait for the connection's next read: :class:`BusyAck`.

Why. Linux acknowledges a segment at once only when the receive window can
grow (``__tcp_ack_snd_check``); a segment that lands behind unread bytes
cannot grow it, so its ACK waits for the reader's next read
(``tcp_cleanup_rbuf``), a write it can ride on, or the delayed-ACK timer.
A connection that takes a client's window in one large read and then works
through it in Python turns that work into round-trip time on the client's
side. A client on BBR sizes its congestion window and its pacing from what
it measures: with a round-trip floor of a microsecond on loopback, its
window is a few segments, so it sends as fast as ACKs come back. On this
project's bench, WebSocket 64 B frames from a client on BBR came in at half
the rate of the same client on cubic (README, "Benchmark").

The one per-socket rule that acknowledges such a segment at once is
``SO_RCVLOWAT``'s: while fewer than ``sk_rcvlowat`` bytes are unread, the
kernel ACKs at once, since the reader said it waits for more
(``__tcp_ack_snd_check``; a per-route ``quickack`` would do it too, but
that is the host's, and ``TCP_QUICKACK`` does not stick). The same value
gates ``EPOLLIN``, so it is raised only while this connection is not
waiting in epoll: from a large read to the end of the event loop's pass
(``call_soon``), then put back to 1, which signals ``EPOLLIN`` again for
what arrived meanwhile (``tcp_set_rcvlowat`` calls ``tcp_data_ready``).

Invariants:

- raised at most once per pass, and always put back within it: the
  ``call_soon`` is queued before the pass goes on; nothing between them
  waits in epoll for this socket;
- raised to half the socket's receive buffer, which the bytes a client
  sends during one pass stay under (a quarter did not: on the bench, 1.2x
  against 1.4x frames/s). ``tcp_set_rcvlowat`` grows ``sk_rcvbuf`` and
  clamps the window to the value when the value does not fit the buffer at
  the kernel's measured payload-to-truesize ratio: half fits while that
  ratio is at least 1/2 (near 1 on loopback), and when it does not, the
  clamp (half the old buffer) is above the window the old buffer allowed;
- small reads (below :data:`BUSY_READ_BYTES`) leave it alone: a connection
  that is not behind its client has its ACKs go out with its reads.

Only WebSocket streams use it (:func:`ringbridge.api.dataplane.stream.open_stream`):
their clients keep a window of frames in flight while the server works.
An HTTP/1.1 client sends one body and waits for its answer, and there the
three system calls a pass cost more than they gave (bench, 3 rounds against
the tree before: HTTP 4096 B bodies 0.90x requests/s, typed JSON 0.93x;
WebSocket 64 B from a client on BBR 1.25-1.48x, on cubic 0.98-1.01x).
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Final

#: A read at least this large: the client sent faster than this connection reads.
BUSY_READ_BYTES: Final = 16 << 10

_TCP_FAMILIES: Final = (socket.AF_INET, socket.AF_INET6)


class BusyAck:
    """Raise ``SO_RCVLOWAT`` for the rest of the event loop's pass after a large read."""

    __slots__ = ("_loop", "_raised", "_sock", "_transport")

    def __init__(
        self,
        transport: asyncio.BaseTransport | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        """Without a transport: one that never raises it (:data:`OFF`)."""
        self._transport = transport
        self._loop = loop
        self._raised = False
        sock: Any = None if transport is None else transport.get_extra_info("socket")
        is_tcp = sock is not None and loop is not None and sock.family in _TCP_FAMILIES
        self._sock: Any = sock if is_tcp else None

    @property
    def raised(self) -> bool:
        return self._raised

    def read(self, nbytes: int) -> None:
        """``nbytes`` were just read: a large read raises the mark until the pass ends."""
        if nbytes < BUSY_READ_BYTES or self._raised or self._sock is None:
            return
        try:
            rcvbuf = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, max(1, rcvbuf >> 1))
        except OSError:
            self._sock = None  # not a socket that takes it: never again on this connection
            return
        self._raised = True
        assert self._loop is not None  # with a socket, a loop (__init__)
        self._loop.call_soon(self._lower)

    def _lower(self) -> None:
        self._raised = False
        if self._sock is None or self._transport is None or self._transport.is_closing():
            return  # closed: its fd may already be another connection's
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
        except OSError:
            self._sock = None


#: The connections' default, until one becomes a WebSocket stream.
OFF: Final = BusyAck()
