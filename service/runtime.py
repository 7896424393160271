"""The running service: what :func:`ringbridge.assemble.assemble` builds and the front doors share.

:class:`Runtime` is hung on ``app.state.runtime`` by the API's lifespan;
routes reach it through ``ringbridge.api.state.runtime_of``. Beside the
backend, ring, producer and codec it holds the state every front door
shares: refused batches by reason, the consumer's progress for readiness,
whether anybody else writes the ring, the open streams a shutdown has to
finish, the event maps read out of the kernel (``--event-map``,
``--event-pin``) with their readers, and the fleet front door (``--nats``),
which metrics and readiness read through :class:`FleetDoor`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

from prometheus_client.registry import Collector

from .backends import Backend
from .errors import ForeignWriterError, PeerLimitError, RingbridgeError
from .events.feeds import EventFeeds
from .events.hub import EventHub
from .kernel.ringwatch import RingWatch
from .producer.observe import BatchObserver
from .producer.task import Producer
from .ring import UserRingBuffer
from .schema import SampleCodec
from .schema.payload import Limits, NativeScan
from .settings import Settings

if TYPE_CHECKING:
    from .fleet.stats import FleetStatistics

__all__ = [
    "ConsumerWatch",
    "FleetDoor",
    "ForeignWriterWatch",
    "Rejections",
    "Runtime",
    "StreamRegistry",
]

log = logging.getLogger("ringbridge.app")


class ConsumerWatch:
    """Tells a stuck consumer from an idle one, for ``/readyz``.

    The consumer is stuck when bytes are pending and ``consumer_pos`` has
    not moved since we first saw them pending, for ``stall_s`` seconds. An
    empty ring is never stuck, so a quiet service stays ready.
    """

    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        self._pos: int | None = None
        self._since: float | None = None

    def stalled_for(self, consumer_pos: int, pending: int, now: float | None = None) -> float:
        """Seconds the consumer has been stuck (0.0 when progressing or idle)."""
        now = time.monotonic() if now is None else now
        if pending <= 0 or consumer_pos != self._pos:
            self._pos = consumer_pos
            self._since = now if pending > 0 else None
            return 0.0
        if self._since is None:
            self._since = now
        return now - self._since


class ForeignWriterWatch:
    """Whether someone else writes the ring, for ``/healthz``, ``/readyz`` and the log.

    The ring checks its ``producer_pos`` before every commit and refuses to
    commit once another writer moved it (:class:`~ringbridge.ring.UserRingBuffer`);
    :meth:`check` also runs the ring's full check (pending records included)
    at most every ``interval`` seconds, and :meth:`run` calls it on that
    period so that a writer is caught while no batch comes. The first time a
    foreign writer is seen, it is logged once, with ``recovery``: how to
    recover.
    """

    def __init__(self, ring: UserRingBuffer, recovery: str, interval: float = 1.0) -> None:
        self._ring = ring
        self.recovery = recovery
        self.interval = interval
        self._checked = float("-inf")
        self._fault: str | None = None

    def check(self, now: float | None = None) -> str | None:
        """The cause and how to recover when another writer was seen, else None."""
        if self._fault is not None:
            return self._fault
        now = time.monotonic() if now is None else now
        fault = self._ring.fault
        if fault is None and now - self._checked >= self.interval and not self._ring.closed:
            self._checked = now
            try:
                self._ring.verify()
            except ForeignWriterError as exc:
                fault = exc
            except RingbridgeError:
                pass  # closed meanwhile: shutting down
        if fault is not None:
            self._fault = f"{fault.message}. To recover: {self.recovery}"
            log.error(
                "foreign writer on the ring: stopped committing",
                extra={"error": fault.message, "fix": self.recovery},
            )
        return self._fault

    async def run(self) -> None:
        """Checks every ``interval`` seconds until cancelled (or a writer is seen)."""
        while self.check() is None:
            await asyncio.sleep(self.interval)


@dataclass
class Rejections:
    """Batches refused, by reason (the error code); exported as a labelled counter."""

    by_reason: Counter[str] = field(default_factory=Counter)

    def add(self, reason: str) -> None:
        self.by_reason[reason] += 1


class _Stoppable(Protocol):
    def stop_reading(self) -> None: ...


class StreamRegistry:
    """The open streams, so that a shutdown can end them in order: sample streams
    finish their acks, event subscribers get what they hold, then each closes; and
    how many sample streams each peer address holds (``ws_max_per_peer``)."""

    def __init__(self) -> None:
        self._streams: dict[_Stoppable, str | None] = {}
        self.peers: Counter[str] = Counter()
        self.stopping = False

    def check_peer(self, peer: str, limit: int) -> None:
        """:class:`PeerLimitError` when ``peer`` holds ``limit`` sample streams already."""
        if self.peers[peer] >= limit:
            raise PeerLimitError(
                f"{peer} holds {self.peers[peer]} WebSocket connections, as many as "
                "one peer may (ws_max_per_peer): close one, or send more batches on each"
            )

    def add(self, stream: _Stoppable, peer: str | None = None) -> None:
        """``stream`` is open; a sample stream names its ``peer`` (counted)."""
        self._streams[stream] = peer
        if peer is not None:
            self.peers[peer] += 1

    def discard(self, stream: _Stoppable) -> None:
        if stream not in self._streams:
            return
        peer = self._streams.pop(stream)
        if peer is not None:
            self.peers[peer] -= 1
            if self.peers[peer] <= 0:
                del self.peers[peer]

    def shutdown(self) -> None:
        """Every stream stops reading, finishes its acks and closes (1012)."""
        self.stopping = True
        for s in list(self._streams):
            s.stop_reading()

    def __len__(self) -> int:
        return len(self._streams)


class FleetDoor(Protocol):
    """What the API reads of the fleet front door (``ringbridge.fleet.frontdoor.FrontDoor``)."""

    @property
    def healthy(self) -> bool: ...
    @property
    def state(self) -> str: ...
    def statistics(self) -> FleetStatistics: ...
    async def stop(self, grace: float) -> None: ...


@dataclass
class Runtime:
    settings: Settings
    backend: Backend
    ring: UserRingBuffer
    producer: Producer
    codec: SampleCodec
    # The backend's Prometheus collectors (kernel counters, exported maps and globals).
    exports: list[Collector]
    watch: ConsumerWatch
    writers: ForeignWriterWatch
    # The ring as the kernel reads it, and the pins (None: not watched).
    ring_watch: RingWatch | None = None
    # The event maps subscribers read (GET /v1/events) and what reads them.
    events: EventHub = field(default_factory=EventHub)
    feeds: EventFeeds | None = None
    rejections: Rejections = field(default_factory=Rejections)
    streams: StreamRegistry = field(default_factory=StreamRegistry)
    # Batch sizes and ack latencies by path (exported by ringbridge.api.opsmetrics).
    batches: BatchObserver = field(default_factory=BatchObserver)
    started_at: float = field(default_factory=time.time)
    # Big JSON decodes run one at a time (api/decodecost.py).
    decoding: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    #: The JetStream front door (``--nats``), or None.
    fleet: FleetDoor | None = None
    _stops: set[asyncio.Task[None]] = field(default_factory=set, repr=False)

    @cached_property
    def limits(self) -> Limits:
        """The decode limits of :attr:`settings` (fixed for a runtime; every batch asks)."""
        return Limits.of(self.settings)

    @cached_property
    def native_scan(self) -> NativeScan:
        """The native JSON scan under :attr:`limits` (``scan(kind, data)``), worked out once."""
        return NativeScan(self.codec, self.limits)

    def begin_shutdown(self) -> asyncio.Task[None]:
        """What a server does as its shutdown begins: the producer's stop (returned)
        and the fleet front door's start at once -- it pulls no more and finishes the
        message in hand while queued batches still commit -- and the streams finish."""
        grace = self.settings.shutdown_grace
        if self.fleet is not None:
            stop = asyncio.create_task(self.fleet.stop(grace), name="ringbridge-fleet-stop")
            self._stops.add(stop)
        self.streams.shutdown()
        return asyncio.create_task(self.producer.stop(grace), name="ringbridge-stop")

    def ring_fault(self) -> str | None:
        """Why the service can no longer commit to its ring (another writer), or None:
        what ``/healthz`` and ``/readyz`` fail with."""
        return self.writers.check()
