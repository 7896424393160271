"""Drain triggers: what the producer tells the kernel side after a commit.

The producer calls :meth:`DrainTrigger.request` after every commit and
before it waits for space; ``request`` never blocks and is cheap when there
is nothing to do.

- :class:`Kicker` (``kick`` mode): once per event-loop pass with commits,
  the on-demand drain program runs on the native drain worker
  (:class:`~ringbridge.kernel.drainer.NativeDrainer`), one long-lived thread
  outside the GIL. Requests made while a drain runs
  fold into one more run after it, and a drain that consumed something while
  bytes are still pending (the program's per-run bound was hit) is followed
  by another, so a producer waiting for space is never left without one.
- :class:`TimerWaker` (``timer`` mode): the in-kernel timer drains every
  base period while drains leave samples behind, every two while each one
  empties the ring, and doubles its period while the ring stays empty (an
  idle service costs a few wake-ups a second, not one per base period).
  Once per event-loop pass with commits, after their acks are written, a
  timer found backed off (even one step) is re-armed: its next drain comes
  a base period after its last one, at once if that is past. With one
  request in flight (batches a period apart or more) the drain then follows
  the pass that committed, on the event loop's CPU, between requests -- not
  two periods after the last drain, in the middle of the next request,
  where its softirq delayed that request's ack (README, "Benchmark": the
  ack latency); the first batch after a quiet spell is consumed at once;
  and the period still bounds how often the timer drains. A timer at its
  base period is due then anyway: ``request`` is one read of the mapped
  ctl value.

Failures are counted and logged, never retried in a loop (a poisoned ring
would fail again at once).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..errors import RingbridgeError
from ..kernel.drainer import NativeDrainer
from .loopref import LoopRef

log = logging.getLogger("ringbridge.producer")

@dataclass(frozen=True, slots=True)
class KickStatistics:
    kicks: int  # drain program runs (kick) or timer re-arms (timer)
    samples: int  # samples those drain runs consumed (kick mode only)
    errors: int


class DrainTrigger(Protocol):
    def request(self) -> None: ...
    async def aclose(self) -> None: ...
    def statistics(self) -> KickStatistics: ...


class _OncePerPass:
    """``fn`` run once the event-loop pass's current callback returns; the
    requests made before it runs fold into that one call."""

    __slots__ = ("_fn", "_loop", "due")

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn = fn
        self._loop = LoopRef()
        self.due = False

    def request(self) -> None:
        if self.due:
            return
        self.due = True
        self._loop.get().call_soon(self.run_due)

    def run_due(self) -> None:
        if self.due:
            self.due = False
            self._fn()


class Kicker:
    """``kick`` mode: a drain on the native worker after each request."""

    def __init__(self, drainer: NativeDrainer) -> None:
        self._drainer = drainer
        self._closed = False
        self._errors_logged = 0
        self._pass = _OncePerPass(self._kick)

    def request(self) -> None:
        """Kick once this event-loop pass ends: the batches the producer
        commits in the same pass share one kick (one eventfd write, one
        wake-up of the worker) instead of one each."""
        if not self._closed:
            self._pass.request()

    def _kick(self) -> None:
        self._drainer.kick()
        self._log_new_errors()

    def _log_new_errors(self) -> None:
        stats = self._drainer.statistics()
        if stats.errors != self._errors_logged:
            log.error(
                "drain kick failed",
                extra={
                    "error": os.strerror(stats.last_error),
                    "failures": stats.errors - self._errors_logged,
                },
            )
            self._errors_logged = stats.errors

    async def aclose(self) -> None:
        """Stop taking requests; finish the drains already asked for (their
        thread reads the ring mapping, which the owner unmaps after this)."""
        if self._closed:
            return
        self._closed = True
        self._pass.run_due()  # a kick still due runs before the worker stops
        await asyncio.to_thread(self._drainer.close)
        self._log_new_errors()

    def statistics(self) -> KickStatistics:
        s = self._drainer.statistics()
        return KickStatistics(s.runs, s.samples, s.errors)


class TimerWaker:
    """``timer`` mode: re-arm a backed-off drain timer after each pass that committed.

    ``idle_drains`` reads the timer's back-off steps (no syscall; 0: at its
    base period); ``wake`` runs the arm program (one ``BPF_PROG_TEST_RUN``).
    That runs once the event-loop pass's current callback returns, as the
    kick does: after the acks of the commits that asked for it are written,
    not before them, and once for all the commits of that callback.
    """

    def __init__(self, idle_drains: Callable[[], int], wake: Callable[[], None]) -> None:
        self._idle_drains = idle_drains
        self._wake = wake
        self._closed = False
        self._pass = _OncePerPass(self._run)
        self.wakes = 0
        self.errors = 0

    def request(self) -> None:
        if self._closed or self._pass.due or not self._idle_drains():
            return
        self._pass.request()

    def _run(self) -> None:
        try:
            self._wake()
        except RingbridgeError as exc:
            # The timer keeps running at its backed-off period: slower, not stuck.
            self.errors += 1
            log.error("drain timer re-arm failed", extra={"error": exc.message})
            return
        self.wakes += 1

    async def aclose(self) -> None:
        """Stop taking requests; a re-arm still due runs first (the shutdown
        waits for the ring to be consumed, at the base period, not idle's)."""
        if self._closed:
            return
        self._closed = True
        self._pass.run_due()

    def statistics(self) -> KickStatistics:
        return KickStatistics(self.wakes, 0, self.errors)
