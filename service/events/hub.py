"""Fan-out of kernel events to subscribers, with bounded memory. No I/O.

Each event map (one ``BPF_MAP_TYPE_RINGBUF`` read out by
:class:`ringbridge.kernel.eventring.KernelRingReader`) numbers its events
(``seq``, from 0 at service start) and hands each to every subscriber's
bounded buffer. Nothing here ever waits on a subscriber: the kernel ring is
read out at the kernel's pace whatever the clients do.

- A subscriber whose buffer is full loses the events that do not fit (the
  newest: what it has is a gap-free prefix). The gap is marked where it
  happened by one :class:`Lost` item (``{"lost": N, "first_seq", "last_seq"}``),
  which the subscriber reads in its place, after the events before it; its
  map counts ``lost["slow_subscriber"]``.
- An event that arrives while nobody subscribes is counted
  (``lost["no_subscriber"]``) and dropped: there is no replay buffer; a
  client that reconnects sees the gap in ``seq``.

Counters are plain values (:meth:`EventMap.statistics`) for the metrics
layer. In the style of anyio's memory streams: ``get_nowait()`` plus a thin
async ``get()``, ``statistics()``, idempotent ``close()``.
"""

from __future__ import annotations

import asyncio
import base64
from collections import deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import ConfigError, RingClosedError
from ..schema import TypeDecoder
from ..wire import event_json

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_EVENTS",
    "Event",
    "EventHub",
    "EventMap",
    "EventMapStatistics",
    "Lost",
    "SubscriberStatistics",
    "Subscription",
]

#: Per-subscriber buffer bounds (events and payload bytes), unless asked otherwise.
DEFAULT_MAX_EVENTS: Final = 1024
DEFAULT_MAX_BYTES: Final = 4 * 1024 * 1024
#: The reasons under which ``lost`` counts events.
LOST_REASONS: Final = ("slow_subscriber", "no_subscriber")


class Event:
    """One record out of a kernel ring buffer; its JSON form is computed once."""

    __slots__ = ("_encoded", "_json", "_map", "data", "seq")

    def __init__(self, emap: EventMap, seq: int, data: bytes) -> None:
        self._map = emap
        self.seq = seq
        self.data = data
        self._json: dict[str, Any] | None = None
        self._encoded: bytes | None = None

    @property
    def map(self) -> str:
        return self._map.name

    def json(self) -> dict[str, Any]:
        """``{"seq", "value": {...}}`` when the map has a type, else ``{"seq", "data": b64}``.

        A record shorter than the type (the program published something
        else) keeps its bytes and says why: ``{"seq", "data", "error"}``;
        bytes past the type's size are kept as ``"tail"`` (base64).
        """
        if self._json is None:
            self._json = self._map._encode(self)
        return self._json

    def encoded(self) -> bytes:
        """:meth:`json` as compact JSON bytes, encoded once for every subscriber."""
        if self._encoded is None:
            self._encoded = event_json(self.json())
        return self._encoded

    def __repr__(self) -> str:
        return f"Event({self.map!r}, seq={self.seq}, {len(self.data)} bytes)"


@dataclass(slots=True)
class Lost:
    """``count`` events (``first_seq``..``last_seq``) this subscriber did not get."""

    count: int
    first_seq: int
    last_seq: int

    def json(self) -> dict[str, Any]:
        return {"lost": self.count, "first_seq": self.first_seq, "last_seq": self.last_seq}

    def encoded(self) -> bytes:
        return event_json(self.json())


Item = Event | Lost


@dataclass(frozen=True, slots=True)
class SubscriberStatistics:
    buffered_events: int
    buffered_bytes: int
    max_events: int
    max_bytes: int
    delivered: int
    lost: int
    closed: bool


class Subscription:
    """One subscriber's bounded buffer on one event map.

    One reader per subscription. ``get()`` waits for the next item;
    iteration (``async for``) ends when the subscription or its map closes.
    """

    def __init__(self, emap: EventMap, max_events: int, max_bytes: int) -> None:
        if max_events <= 0 or max_bytes <= 0:
            raise ConfigError("a subscriber's buffer must hold at least one event and one byte")
        self._map: EventMap | None = emap
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._items: deque[Item] = deque()
        self._events = 0
        self._bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self.delivered = 0
        self.lost = 0
        self.name = emap.name

    # -- the map's side ------------------------------------------------------

    def _offer(self, ev: Event) -> bool:
        """Buffers ``ev``, or marks it lost; False when it was lost."""
        n = len(ev.data)
        # An event larger than the whole byte bound still gets through an
        # empty buffer: otherwise it could never be delivered at all.
        fits = self._events < self.max_events and (
            self._bytes + n <= self.max_bytes or self._events == 0
        )
        if fits:
            self._items.append(ev)
            self._events += 1
            self._bytes += n
            ok = True
        else:
            last = self._items[-1] if self._items else None
            if isinstance(last, Lost):
                last.count += 1
                last.last_seq = ev.seq
            else:
                # Markers are not counted against the bounds; there is at most
                # one per run of lost events, so at most one per buffered event.
                self._items.append(Lost(1, ev.seq, ev.seq))
            self.lost += 1
            ok = False
        self._wake()
        return ok

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    # -- the subscriber's side -------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._map is None

    def get_nowait(self) -> Item:
        """The next event or lost marker; :class:`asyncio.QueueEmpty` when none is buffered,
        :class:`RingClosedError` once closed and drained."""
        if self._items:
            item = self._items.popleft()
            if isinstance(item, Event):
                self._events -= 1
                self._bytes -= len(item.data)
                self.delivered += 1
            return item
        if self._map is None:
            raise RingClosedError(f"event subscription on {self.name!r} is closed")
        raise asyncio.QueueEmpty

    async def get(self) -> Item:
        while True:
            try:
                return self.get_nowait()
            except asyncio.QueueEmpty:
                pass
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def __aiter__(self) -> AsyncIterator[Item]:
        return self

    async def __anext__(self) -> Item:
        try:
            return await self.get()
        except RingClosedError:
            raise StopAsyncIteration from None

    def statistics(self) -> SubscriberStatistics:
        return SubscriberStatistics(
            buffered_events=self._events,
            buffered_bytes=self._bytes,
            max_events=self.max_events,
            max_bytes=self.max_bytes,
            delivered=self.delivered,
            lost=self.lost,
            closed=self.closed,
        )

    def close(self) -> None:
        """Unsubscribes; what is buffered can still be read, then reads end."""
        emap, self._map = self._map, None
        if emap is not None:
            emap._remove(self)
        self._wake()


@dataclass(frozen=True, slots=True)
class EventMapStatistics:
    """Per-map counters since start (``lost`` by reason: see :data:`LOST_REASONS`)."""

    name: str
    type_name: str | None
    events: int
    bytes: int
    subscribers: int
    lost: dict[str, int] = field(default_factory=dict)
    decode_errors: int = 0


class EventMap:
    """The events of one kernel ring buffer and their subscribers."""

    def __init__(
        self, name: str, *, decoder: TypeDecoder | None = None, type_name: str | None = None
    ) -> None:
        self.name = name
        self.decoder = decoder
        self.type_name = type_name if decoder is not None else None
        self._subs: list[Subscription] = []
        self._closed = False
        self.next_seq = 0
        self.events = 0
        self.bytes = 0
        self.lost = dict.fromkeys(LOST_REASONS, 0)
        self.decode_errors = 0

    def subscribe(
        self, *, max_events: int = DEFAULT_MAX_EVENTS, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> Subscription:
        """A new subscriber: it gets every event published from now on (none before)."""
        if self._closed:
            raise RingClosedError(f"event map {self.name!r} is closed")
        sub = Subscription(self, max_events, max_bytes)
        self._subs.append(sub)
        return sub

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def publish(self, records: Iterable[bytes]) -> None:
        """Numbers the records and hands each to every subscriber (never blocks)."""
        if self._closed:
            return
        subs = tuple(self._subs)
        for data in records:
            ev = Event(self, self.next_seq, data)
            self.next_seq += 1
            self.events += 1
            self.bytes += len(data)
            if not subs:
                self.lost["no_subscriber"] += 1
                continue
            for sub in subs:
                if not sub._offer(ev):
                    self.lost["slow_subscriber"] += 1

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)

    def _encode(self, ev: Event) -> dict[str, Any]:
        dec = self.decoder
        if dec is None:
            return {"seq": ev.seq, "data": base64.b64encode(ev.data).decode()}
        if len(ev.data) < dec.size:
            self.decode_errors += 1
            return {
                "seq": ev.seq,
                "data": base64.b64encode(ev.data).decode(),
                "error": f"{len(ev.data)} bytes are shorter than {dec.ctype} ({dec.size})",
            }
        out: dict[str, Any] = {"seq": ev.seq, "value": dec.decode(ev.data)}
        if len(ev.data) > dec.size:
            out["tail"] = base64.b64encode(ev.data[dec.size :]).decode()
        return out

    def statistics(self) -> EventMapStatistics:
        return EventMapStatistics(
            name=self.name,
            type_name=self.type_name,
            events=self.events,
            bytes=self.bytes,
            subscribers=len(self._subs),
            lost=dict(self.lost),
            decode_errors=self.decode_errors,
        )

    def close(self) -> None:
        """Ends every subscription (each can still read what it holds)."""
        self._closed = True
        for sub in list(self._subs):
            sub.close()


class EventHub:
    """The event maps of the service, by name."""

    def __init__(self) -> None:
        self._maps: dict[str, EventMap] = {}

    def add(
        self, name: str, *, decoder: TypeDecoder | None = None, type_name: str | None = None
    ) -> EventMap:
        if name in self._maps:
            raise ConfigError(f"event map {name!r} is configured twice")
        emap = self._maps[name] = EventMap(name, decoder=decoder, type_name=type_name)
        return emap

    def get(self, name: str) -> EventMap:
        """The map called ``name``; ConfigError naming the ones there are."""
        try:
            return self._maps[name]
        except KeyError:
            have = ", ".join(sorted(self._maps)) or "none"
            raise ConfigError(f"no event map {name!r} (event maps: {have})") from None

    def names(self) -> list[str]:
        return list(self._maps)

    def statistics(self) -> list[EventMapStatistics]:
        return [m.statistics() for m in self._maps.values()]

    def close(self) -> None:
        for m in self._maps.values():
            m.close()
