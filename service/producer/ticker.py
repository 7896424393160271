"""A periodic drain from user space, for objects that bring a drain program but no timer.

The built-in consumer drains itself with an in-kernel ``bpf_timer``. A user's
object in ``--drain timer`` mode brings only a ``SEC("syscall")`` drain
program, so the service runs it on a period instead: every ``period`` seconds
while committed bytes are pending, in a worker thread (a drain is a syscall
that may take milliseconds). An idle ring costs one cheap check per period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Final

from ..errors import RingbridgeError
from .kick import KickStatistics

log = logging.getLogger("ringbridge.producer")

#: A Python loop cannot tick much faster without burning a core on wake-ups.
MIN_PERIOD: Final = 0.001


class DrainTicker:
    """Runs ``drain`` every ``period`` seconds while ``pending()`` is non-zero.

    A :class:`~ringbridge.producer.kick.DrainTrigger`: the producer's
    per-commit ``request`` is a no-op here, the period does the work.
    """

    def __init__(
        self,
        drain: Callable[[], int],
        pending: Callable[[], int],
        period: float,
        *,
        grace: float = 0.0,
    ) -> None:
        self._drain = drain
        self._grace = grace
        self._pending = pending
        self.period = max(period, MIN_PERIOD)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.runs = 0
        self.samples = 0
        self.errors = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ringbridge-drain-ticker")

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self.period)
            if self._pending() <= 0:
                continue
            try:
                n = await asyncio.to_thread(self._drain)
            except RingbridgeError as exc:
                self.errors += 1
                log.error("periodic drain failed", extra={"error": exc.message})
                # Back off: a failing drain (a poisoned ring) fails again at once.
                await asyncio.sleep(min(1.0, self.period * 100))
                continue
            self.runs += 1
            self.samples += n

    def request(self) -> None:
        """Commits need no action: the next tick drains them."""

    def statistics(self) -> KickStatistics:
        return KickStatistics(self.runs, self.samples, self.errors)

    async def aclose(self) -> None:
        """Keeps ticking until what was committed is consumed (at most ``grace``
        seconds), then stops after the tick in progress."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._grace
        while self._task is not None and self._pending() > 0 and loop.time() < deadline:
            await asyncio.sleep(self.period)
        # Not cancelled: a drain running in its thread finishes first (it
        # uses the program's fd, which the owner closes after this).
        self._stopping = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
