"""What a WebSocket connection may hold, for every path that serves ``WS /v1/stream``.

A connection used to be admitted for one whole frame buffer (``ws_frame_bytes``,
4 MiB + 64 KiB) at its handshake and to keep it while open: 15 idle
connections spent a 64 MiB budget and every later client was refused (#19,
item 2). Now a connection holds credit only for its frames in flight:

- :class:`FrameCredit`: each data frame is reserved whole when its header
  arrives, before its payload is read; the reservation becomes its batch's
  credit (resized to the batch's ring bytes once decoded) until the ack. A
  frame that finds no credit is not read: its connection stops reading
  (TCP pushes back) and waits in line, first come first served, until
  credit for it frees up -- never an error. A frame is reserved before any
  of its payload is read, so the budget cannot fill with halves of frames
  that all wait for each other. What a connection holds beyond its frames'
  credit is its own small state and staging buffer.
- :class:`IdleTimer`: a connection with no frame received and no ack owed
  for ``ws_idle_timeout`` seconds is closed (1001).
- The per-peer limit (``ws_max_per_peer``, 429 at the handshake) is counted
  where the streams are registered (``Runtime.streams``).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Final, Protocol

from .. import wire
from ..errors import OverloadedError, RingbridgeError
from ..producer.admission import Admission, Credit
from .lazytimer import LazyTimer

__all__ = ["IDLE_CLOSE", "FrameCredit", "IdleTimer", "Waiter"]

#: The close code of a stream closed for being idle (going away).
IDLE_CLOSE: Final = wire.CLOSE_GOING_AWAY


class Waiter(Protocol):
    """A connection whose next frame waits for credit."""

    def credit_granted(self, credit: Credit) -> None:
        """The credit its frame waited for: read the frame now."""

    def credit_refused(self, exc: RingbridgeError) -> None:
        """No credit will come (the service stops)."""


class FrameCredit:
    """The frames waiting for admission credit, first come first served (one per app)."""

    def __init__(self, admission: Callable[[], Admission | None]) -> None:
        self._admission = admission
        self._line: deque[tuple[Waiter, int]] = deque()
        self._listening: Admission | None = None
        self._serving = False

    @property
    def waiting(self) -> int:
        return len(self._line)

    def _gate(self, adm: Admission | None) -> Admission | None:
        if adm is None:
            adm = self._admission()
        if adm is not None and adm is not self._listening:
            adm.add_release_listener(self._on_release)
            self._listening = adm
        return adm

    def reserve(
        self, waiter: Waiter, nbytes: int, admission: Admission | None = None
    ) -> Credit | None:
        """Credit for a frame of ``nbytes`` now, or None: ``waiter`` waits in line
        (behind every frame already waiting). StoppingError once admission closed.
        ``admission``: the running one, when the caller holds it (one lookup
        less per frame)."""
        adm = self._gate(admission)
        if adm is not None and not self._line:
            try:
                return adm.take(nbytes, float("inf"))
            except OverloadedError:
                pass
        self._line.append((waiter, nbytes))
        return None

    def forget(self, waiter: Waiter) -> None:
        """``waiter`` waits no more (its connection ended)."""
        kept = [(w, n) for w, n in self._line if w is not waiter]
        if len(kept) != len(self._line):
            self._line = deque(kept)
            self._schedule()

    def _on_release(self) -> None:
        # Called while credit goes back; granting takes it again: later.
        if self._line:
            self._schedule()

    def _schedule(self) -> None:
        if not self._serving:
            self._serving = True
            asyncio.get_running_loop().call_soon(self._serve)

    def _serve(self) -> None:
        self._serving = False
        adm = self._admission()
        while self._line and adm is not None:
            waiter, nbytes = self._line[0]
            try:
                credit = adm.take(nbytes, float("inf"))
            except OverloadedError:
                return  # none yet: the head keeps its place
            except RingbridgeError as exc:  # stopping
                self._line.popleft()
                waiter.credit_refused(exc)
                continue
            self._line.popleft()
            waiter.credit_granted(credit)


class IdleTimer:
    """Calls ``on_idle(code, reason)`` once a stream has been idle for ``timeout`` s:
    :meth:`idle` when no frame is being received and no ack is owed, :meth:`busy`
    as soon as a frame arrives. A stream turns idle and busy again with nearly
    every window of frames: neither touches the loop's timers (:mod:`.lazytimer`).
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        on_idle: Callable[[int, str], None],
    ) -> None:
        self._loop = loop
        self._timeout = timeout
        self._on_idle = on_idle
        self._timer = LazyTimer(loop)

    def idle(self) -> None:
        if self._timer.deadline is None:
            self._timer.set(self._loop.time() + self._timeout, self._fire)

    def busy(self) -> None:
        self._timer.clear()

    def close(self) -> None:
        self._timer.close()

    def _fire(self) -> None:
        self._on_idle(IDLE_CLOSE, f"idle for {self._timeout:g} s")
