"""What the API layer shares between routes: the running service.

:class:`Runtime` is built by the lifespan in :mod:`ringbridge.api.app` and hung
on ``app.state.runtime``; routes reach it through :func:`runtime_of`.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from fastapi import FastAPI
from prometheus_client.registry import Collector

from ..errors import StoppingError
from ..kernel.bpfobj import LoadedRingbridge
from ..kernel.pinnedring import PinnedRing
from ..kernel.ringbuf import UserRingBuffer
from ..kernel.userobj import LoadedObject
from ..producer.task import Producer
from ..schema import SampleCodec
from ..settings import DrainMode, Settings


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

    def stalled(self, consumer_pos: int, pending: int, now: float | None = None) -> bool:
        return self.stalled_for(consumer_pos, pending, now) >= self.stall_s


@dataclass
class Rejections:
    """Batches refused, by reason (the error code); exported as a labelled counter."""

    by_reason: Counter[str] = field(default_factory=Counter)

    def add(self, reason: str) -> None:
        self.by_reason[reason] += 1


class _Stoppable(Protocol):
    def stop_reading(self) -> None: ...


class StreamRegistry:
    """The open WebSocket streams of one app, so that a shutdown can finish their acks."""

    def __init__(self) -> None:
        self._streams: set[_Stoppable] = set()
        self.stopping = False

    def add(self, stream: _Stoppable) -> None:
        self._streams.add(stream)

    def discard(self, stream: _Stoppable) -> None:
        self._streams.discard(stream)

    def shutdown(self) -> None:
        """Every stream stops reading, finishes its acks and closes (1012)."""
        self.stopping = True
        for s in list(self._streams):
            s.stop_reading()

    def __len__(self) -> int:
        return len(self._streams)


@dataclass
class Runtime:
    settings: Settings
    loaded: LoadedRingbridge | LoadedObject | PinnedRing
    ring: UserRingBuffer
    producer: Producer
    codec: SampleCodec
    drain: DrainMode
    rejections: Rejections
    watch: ConsumerWatch
    streams: StreamRegistry = field(default_factory=StreamRegistry)
    # A user object's exported maps and globals (see ringbridge.api.exported).
    exports: list[Collector] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)


def runtime_of(app: FastAPI) -> Runtime:
    rt: Runtime | None = getattr(app.state, "runtime", None)
    if rt is None:
        raise StoppingError("the service is not running (starting up or shut down)")
    return rt
