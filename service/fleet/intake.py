"""The pulling side of one fleet session: a puller per subject, inside a bounded window.

Each subject's puller keeps one pull request open, asking for no more than
its share of the in-flight bounds (``max_inflight`` messages and
``max_inflight_bytes``, split evenly between the subjects, each share at
least the servers' ``max_payload`` so that any message fits) minus what it
already holds. Before asking it grows the window credit -- the front door's
share of the service's admission budget -- by what it asks for: with no
budget left (HTTP and WebSocket hold it) it waits, and JetStream keeps the
messages. When the ring is full, held messages are not resolved, the
subject's share stays used, and its puller stops asking: the node's pending
count grows in JetStream, not in memory.

Deliveries go into the sequencer; duplicates (at or below the cursor) are
acked at once and dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from ..errors import OverloadedError
from ..producer.admission import Credit
from .config import FleetConfig
from .connect import LinkState
from .sequencer import Delivery, Sequencer
from .source import PullSource
from .stats import FleetCounters

__all__ = ["Intake"]

log = logging.getLogger("ringbridge.fleet")


class Intake:
    """Pullers, window credit and deliveries of one session."""

    def __init__(
        self,
        cfg: FleetConfig,
        seq: Sequencer,
        window: Credit,
        counters: FleetCounters,
        link: LinkState,
        ensure: Callable[[PullSource], Coroutine[Any, Any, None]],
        on_held: Callable[[], None],
    ) -> None:
        self.cfg = cfg
        self.seq = seq
        self.window = window
        self._counters = counters
        self._link = link
        self._ensure = ensure
        self._on_held = on_held
        self.sources: list[PullSource] = []
        self._outstanding = [0] * len(cfg.subjects)  # bytes asked for by open requests
        self._room = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()

    def start(self, max_payload: int) -> None:
        n = len(self.cfg.subjects)
        msgs = max(1, self.cfg.max_inflight // n)
        nbytes = self.cfg.max_inflight_bytes // n
        if nbytes < max_payload:
            log.warning(
                "in-flight bytes per subject below the servers' max_payload: raised to it",
                extra={"per_subject": nbytes, "max_payload": max_payload},
            )
            nbytes = max_payload
        self._tasks = [asyncio.create_task(self._puller(s, msgs, nbytes)) for s in self.sources]

    async def close(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for src in self.sources:
            await src.close()
        self.window.release()

    def room(self) -> None:
        """Held messages were resolved: pullers may ask for more."""
        self.resize_window()
        self._room.set()

    def reconnected(self) -> None:
        # Pull requests in flight were lost with the connection: ask again now.
        for src in self.sources:
            if src.mode == "pins":
                # Its in-memory consumer may have died with a server restart:
                # made again from the cursor (cheap, and never skips).
                src.gone = True
            src.interrupt("reconnected")

    def resize_window(self, extra: int = 0) -> None:
        if self.window.held:
            self.window.resize(self.seq.held_bytes + sum(self._outstanding) + extra)

    def _held_by(self, index: int) -> tuple[int, int]:
        msgs = nbytes = 0
        for d in self.seq.held():
            if d.source == index:
                msgs += 1
                nbytes += d.size
        return msgs, nbytes

    async def _puller(self, src: PullSource, quota_msgs: int, quota_bytes: int) -> None:
        while True:
            try:
                await self._pull_while_room(src, quota_msgs, quota_bytes)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # JetStream briefly away (a server restarting), a consumer
                # being made again: keep asking, never leave a subject unread.
                src.gone = True
                log.warning(
                    "pulling failed; trying again",
                    extra={"subject": src.subject, "error": repr(exc)},
                )
                await asyncio.sleep(1.0)

    async def _pull_while_room(self, src: PullSource, quota_msgs: int, quota_bytes: int) -> None:
        loop = asyncio.get_running_loop()
        backoff = 0.05
        while True:
            if src.gone:
                await self._ensure(src)
            held_msgs, held_bytes = self._held_by(src.index)
            msgs = quota_msgs - held_msgs
            nbytes = quota_bytes - held_bytes
            if msgs <= 0 or nbytes < min(quota_bytes, 64 * 1024):
                self._room.clear()
                await self._room.wait()
                continue
            try:
                self.resize_window(nbytes)
            except OverloadedError:
                # The service's budget is spent (HTTP, WebSocket): ask later.
                self._counters.retries["overloaded"] += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            backoff = 0.05
            self._outstanding[src.index] = nbytes
            started = loop.time()
            try:
                why = await src.pull(msgs, nbytes, self.cfg.pull_expires)
            finally:
                self._outstanding[src.index] = 0
                self.resize_window()
            if why == "timeout":
                # The server ends every request it knows (408 at its expiry):
                # no answer at all is a request to a consumer that is no more
                # (a pins-mode consumer gone with a server restart or its
                # inactivity threshold) or lost with a connection. Make sure.
                src.gone = True
            if why.startswith(("503", "409")) or (why == "timeout" and not self._link.connected):
                log.debug("pull request ended", extra={"subject": src.subject, "why": why})
                if loop.time() - started < 0.5:
                    await asyncio.sleep(0.5)

    def on_delivery(self, d: Delivery) -> None:
        d.held_since = asyncio.get_running_loop().time()
        if d.delivered > 1:
            self._counters.redelivered += 1
        if self.seq.offer(d):
            self._on_held()
            return
        self._counters.duplicate += 1
        if d.handle is not None:
            t = asyncio.ensure_future(d.handle.ack())
            self._background.add(t)
            t.add_done_callback(self._background.discard)
            t.add_done_callback(lambda f: f.cancelled() or f.exception())
