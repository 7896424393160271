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

Two per-socket settings keep those ACKs from waiting:

- the window is clamped to three quarters of the receive buffer
  (``TCP_WINDOW_CLAMP``): the rest takes what arrives while the server
  works without the window shrinking, so the kernel ACKs it at once, also
  while the server sleeps in epoll and waits to be woken. Until Linux 6.6
  the kernel itself advertised only half of the buffer
  (``tcp_adv_win_scale`` 1); since "tcp: get rid of
  sysctl_tcp_adv_win_scale" it advertises what the measured payload ratio
  allows, all of it on loopback. Three quarters, not the old half (the
  same rate on the bench): autotuning sizes the buffer for twice what the
  connection delivered in its last round trip, and a window clamped to half
  would leave little room to grow where the ratio is near 1. The kernel
  resets the clamp to the whole window when autotuning grows the buffer and
  when the measured payload ratio changes (which it does from one full-size
  segment to the next on loopback), so it is set again after every large
  read;
- from a large read to the end of the event loop's pass, ``SO_RCVLOWAT``
  is raised to half the buffer: while fewer than ``sk_rcvlowat`` bytes are
  unread, the kernel ACKs at once, since the reader said it waits for more
  (``__tcp_ack_snd_check``). This holds whatever the payload ratio (where
  the clamp is above the window the buffer gives, it changes nothing).
  The same value gates ``EPOLLIN``, so it is put back to 1 by a
  ``call_soon`` queued when raised, before the loop waits again; that
  signals ``EPOLLIN`` for what arrived meanwhile (``tcp_set_rcvlowat``
  calls ``tcp_data_ready``). ``tcp_set_rcvlowat`` grows ``sk_rcvbuf`` and
  clamps the window to the value when the value does not fit the buffer
  at the payload ratio: half fits while the ratio is at least 1/2, and
  when it does not, that clamp is above the window the old buffer allowed.

A per-route ``quickack`` would do it too, but that is the host's, and
``TCP_QUICKACK`` does not stick. Measured on the bench (README,
"Benchmark"; ``bench/results.md``): WebSocket 64 B frames from a client on
BBR, ``SO_RCVLOWAT`` alone 1.25-1.48x frames/s, the clamp 1.37x more:
above the same client on cubic.

Reads below :data:`BUSY_READ_BYTES` change nothing: a connection that is
not behind its client has its ACKs go out with its reads.

Only WebSocket streams use it (:func:`ringbridge.api.dataplane.stream.open_stream`):
their clients keep a window of frames in flight while the server works.
An HTTP/1.1 client sends one body and waits for its answer, and there the
system calls of a pass cost more than they gave (bench, 3 rounds against
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
    """After a large read: the window clamped to 3/4 of the receive buffer,
    ``SO_RCVLOWAT`` raised for the rest of the event loop's pass."""

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
        """``nbytes`` were just read: after a large one, the window clamp follows
        the receive buffer, and the mark is raised until the pass ends."""
        if nbytes < BUSY_READ_BYTES or self._raised or self._sock is None:
            return
        try:
            rcvbuf = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            clamp = rcvbuf - (rcvbuf >> 2)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP, clamp)
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
