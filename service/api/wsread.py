"""WebSocket frames are read on credit, frame by frame: an idle connection holds none.

A connection used to be admitted for one whole frame buffer (``ws_frame_bytes``,
4 MiB + 64 KiB) at its handshake and to keep it while open: 15 idle
connections spent a 64 MiB budget and every later client was refused. Now
credit follows the bytes:

- :class:`FrameMeter` reads the WebSocket frame headers in the bytes a
  connection receives, before ``websockets`` buffers them. Each data frame is
  reserved whole (header + payload) when its header arrives; the reservation
  goes with the frame into its message, to the app, which makes it the
  batch's credit (resized to the batch's ring bytes after the decode) until
  the ack. Control frames (at most 125 bytes) and frames over the size limit
  (the parser closes those, 1009) pass unreserved.
- No credit for a frame: the rest of what was read (at most one socket read)
  is held back, charged as what it is -- bytes the process holds -- and the
  connection stops reading; it waits in line (:class:`ReadCredit`, first come
  first served) and goes on when credit for its frame frees up. While anyone
  waits, every other connection that is not inside a reserved frame stops
  reading too, so that no crowd of connections can each bring one more socket
  read past the budget; they read again once the line is empty.

A reserved frame is never paused half way: every frame that starts is
finished, so the budget cannot fill with halves of frames that all wait for
each other. Memory held for WebSocket clients is therefore the budget plus
at most one socket read (uvloop reads up to 256,000 bytes) and the
connections' own small state, however many connections are open.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Protocol

from ..errors import RingbridgeError
from ..producer.admission import Admission, Credit

__all__ = ["FrameMeter", "ReadCredit"]

log = logging.getLogger("ringbridge.ws")

_DATA_OPCODES = frozenset((0x0, 0x1, 0x2))  # continuation, text, binary


def _header_size(head: bytes | bytearray) -> int:
    """Bytes the frame header starting with ``head`` takes (2 until that is known)."""
    if len(head) < 2:
        return 2
    size = 2 + (4 if head[1] & 0x80 else 0)
    n = head[1] & 0x7F
    return size + (2 if n == 126 else 8 if n == 127 else 0)


def _payload_length(head: bytes | bytearray) -> int:
    n = head[1] & 0x7F
    if n == 126:
        return int.from_bytes(head[2:4], "big")
    if n == 127:
        return int.from_bytes(head[2:10], "big")
    return n


class _Reading(Protocol):
    """What the meters and the line need of a connection (the WebSocket protocol)."""

    def pause_for_credit(self) -> None:
        """Stop reading the socket until told otherwise."""

    def resume_for_credit(self) -> None:
        """Reading was stopped only because others waited: read again."""

    def credit_granted(self, meter: FrameMeter, credit: Credit) -> None:
        """The credit ``meter``'s held frame waited for: go on with the held bytes."""


class FrameMeter:
    """One connection's frames, as received: reserves each data frame when its header comes."""

    def __init__(self, line: ReadCredit, conn: _Reading, max_frame: int) -> None:
        self._line = line
        self._max_frame = max_frame
        self._head = bytearray()  # a header split across reads (not handed on yet)
        self._left = 0  # payload bytes of the current frame still to come (decided)
        self._reserved = False  # the current frame is covered by a reservation
        self._held: bytes | None = None  # waiting for credit (not handed on)
        self._held_charge: Credit | None = None
        self._granted: Credit | None = None  # the line's credit for the held frame
        self.need = 0  # the held frame's size
        self._message: list[Credit] = []  # reservations of the message being metered
        self._ready: deque[list[Credit]] = deque()  # of messages metered whole, in order
        self.closed = False
        line.add(self, conn)

    @property
    def inside_reserved_frame(self) -> bool:
        return self._left > 0 and self._reserved

    @property
    def waiting(self) -> bool:
        return self._held is not None

    def feed(self, data: bytes) -> bytes:
        """The part of ``data`` the WebSocket parser may take now: a prefix of what
        came (after a header carried over from the previous read); the rest is held."""
        if self.closed:
            return data
        if self._held is not None:
            self._hold(self._held + data)
            return b""
        buf = data
        if self._head:
            buf = bytes(self._head) + data
            self._head.clear()
        pos, n = 0, len(buf)
        while pos < n:
            if self._left:
                step = min(self._left, n - pos)
                self._left -= step
                pos += step
                continue
            size = _header_size(buf[pos : pos + 2])
            if n - pos < size:
                self._head += buf[pos:]  # the rest of this header comes next
                break
            if not self._decide(buf[pos : pos + size]):
                self._hold(buf[pos:])
                break
            pos += size
        if pos == n:
            return buf
        return buf[:pos]

    def _decide(self, head: bytes) -> bool:
        """Reserve the frame of header ``head``; False when it must wait for credit."""
        length = _payload_length(head)
        self._reserved = False
        if head[0] & 0x0F not in _DATA_OPCODES or length > self._max_frame:
            self._left = length  # control frames are tiny; the parser refuses oversized ones
            return True
        total = len(head) + length
        credit, self._granted = self._granted, None
        if credit is None:
            credit = self._line.reserve(self, total)
        if credit is None:
            self.need = total
            return False
        self._message.append(credit)
        if head[0] & 0x80:  # FIN: the message is whole once the parser has it
            self._ready.append(self._message)
            self._message = []
        self._reserved = True
        self._left = length
        return True

    def _hold(self, held: bytes) -> None:
        self._held = held
        # Bytes the process holds are charged, even past the budget: they are
        # here already (one socket read at most: the connection stops reading).
        old, self._held_charge = self._held_charge, self._line.charge(len(held))
        if old is not None:
            old.release()

    def grant(self, credit: Credit) -> bytes:
        """Credit for the held frame came: the held bytes, for the parser (or held again)."""
        held, self._held = self._held, None
        charge, self._held_charge = self._held_charge, None
        if charge is not None:
            charge.release()
        self._granted = credit
        self.need = 0
        return self.feed(held or b"")

    def message_done(self) -> Credit | None:
        """The reservations of the message the parser completed (the oldest metered
        whole), as one credit; None when it had none."""
        if not self._ready:
            return None
        credits = self._ready.popleft()
        if not credits:
            return None
        first = credits[0]
        for extra in credits[1:]:
            first.absorb(extra)
        return first

    def close(self) -> None:
        """The connection ended: everything it held goes back."""
        if self.closed:
            return
        self.closed = True
        pending = [c for group in self._ready for c in group] + self._message
        for c in (*pending, self._held_charge, self._granted):
            if c is not None:
                c.release()
        self._ready.clear()
        self._message = []
        self._held = None
        self._held_charge = self._granted = None
        self._line.forget(self)


class ReadCredit:
    """The connections waiting for frame credit, first come first served (one per app)."""

    def __init__(self, admission: Callable[[], Admission | None]) -> None:
        self._admission = admission
        self._line: deque[FrameMeter] = deque()
        self._conns: dict[FrameMeter, _Reading] = {}
        self._paused: set[FrameMeter] = set()  # stopped only because others wait
        self._listening: Admission | None = None

    def add(self, meter: FrameMeter, conn: _Reading) -> None:
        self._conns[meter] = conn

    def forget(self, meter: FrameMeter) -> None:
        self._conns.pop(meter, None)
        self._paused.discard(meter)
        if meter in self._line:
            self._line.remove(meter)
        self._serve()

    @property
    def waiting(self) -> int:
        return len(self._line)

    def _gate(self) -> Admission | None:
        adm = self._admission()
        if adm is not None and adm is not self._listening:
            adm.add_release_listener(self._on_release)
            self._listening = adm
        return adm

    def reserve(self, meter: FrameMeter, nbytes: int) -> Credit | None:
        """Credit for a frame of ``nbytes`` now, or None: ``meter`` waits in line."""
        adm = self._gate()
        if adm is not None and not self._line:
            try:
                return adm.take(nbytes, float("inf"))
            except RingbridgeError:
                pass  # no credit (or stopping): wait in line
        self._line.append(meter)
        self._paused.discard(meter)
        self._pause_the_others()
        return None

    def charge(self, nbytes: int) -> Credit | None:
        """A charge for ``nbytes`` already held (never refused)."""
        adm = self._gate()
        return adm.charge(nbytes) if adm is not None else None

    def _pause_the_others(self) -> None:
        for meter, conn in self._conns.items():
            if meter.waiting or meter.inside_reserved_frame or meter in self._paused:
                continue
            self._paused.add(meter)
            conn.pause_for_credit()

    def _on_release(self) -> None:
        # Called while credit goes back; granting takes it again: later.
        if self._line or self._paused:
            asyncio.get_running_loop().call_soon(self._serve)

    def _serve(self) -> None:
        adm = self._admission()
        while self._line:
            meter = self._line[0]
            conn = self._conns.get(meter)
            if meter.closed or conn is None:
                self._line.popleft()
                continue
            if adm is None:
                return
            try:
                credit = adm.take(meter.need, float("inf"))
            except RingbridgeError:
                return  # none yet: the head keeps its place
            self._line.popleft()
            conn.credit_granted(meter, credit)
        paused, self._paused = self._paused, set()
        for meter in paused:
            conn = self._conns.get(meter)
            if conn is not None:
                conn.resume_for_credit()
