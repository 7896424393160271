"""Kernel ring buffers feeding the event hub: which maps, read by whom, until when.

``--event-map NAME[=TYPE]`` names a ``BPF_MAP_TYPE_RINGBUF`` of the loaded
object, ``--event-pin PATH[=TYPE]`` one pinned by another loader; TYPE, when
given, is the C type of one event, found like the sample type (the object's
BTF first, then ``--sample-btf`` files, then ``--sample-header``), so events
go out as typed JSON. :class:`EventFeeds` owns one
:class:`~ringbridge.kernel.eventring.KernelRingReader` per map and publishes
what it reads into the map's :class:`~ringbridge.events.hub.EventMap`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..closing import Closing
from ..errors import ConfigError, RingbridgeError
from ..kernel import libbpf as lb
from ..kernel.eventring import DEFAULT_BUDGET, KernelRingReader, ReaderStatistics
from ..kernel.objplan import ObjectPlan
from ..schema import TypeDecoder, TypeSources, model
from .hub import EventHub, EventMap

__all__ = [
    "EventFeeds",
    "EventSpec",
    "MapSource",
    "check_event_maps",
    "open_event_feeds",
    "parse_event_spec",
]

log = logging.getLogger("ringbridge.events")


@dataclass(frozen=True, slots=True)
class EventSpec:
    """One configured event map: ``name`` (the map's, or the pin's file name), its
    event type (None: raw bytes), and the pin path for ``--event-pin``."""

    name: str
    type_name: str | None = None
    pin: Path | None = None


def parse_event_spec(text: str, *, pinned: bool = False) -> EventSpec:
    """``NAME[=TYPE]`` (``--event-map``) or ``PATH[=TYPE]`` (``--event-pin``)."""
    where, sep, type_name = text.partition("=")
    where, type_name = where.strip(), type_name.strip()
    flag = "--event-pin PATH[=TYPE]" if pinned else "--event-map NAME[=TYPE]"
    if not where or (sep and not type_name):
        raise ConfigError(f"{flag}: cannot read {text!r}")
    if pinned:
        pin = Path(where)
        return EventSpec(pin.name, type_name or None, pin)
    return EventSpec(where, type_name or None)


def check_event_maps(plan: ObjectPlan, specs: Iterable[EventSpec]) -> None:
    """Every ``--event-map`` names a kernel ring buffer of the object (before loading it)."""
    rings = [m.name for m in plan.maps if m.type == lb.BPF_MAP_TYPE_RINGBUF]
    for spec in specs:
        if spec.pin is not None:
            continue
        found = [m for m in plan.maps if m.name == spec.name]
        if not found or found[0].type != lb.BPF_MAP_TYPE_RINGBUF:
            what = "has no map" if not found else "has a map of another type called"
            raise ConfigError(
                f"--event-map {spec.name}: BPF object {plan.path} {what} {spec.name!r}; "
                f"its BPF_MAP_TYPE_RINGBUF maps: {', '.join(rings) or 'none'}"
            )


class EventFeeds(Closing):
    """The readers of the configured event maps, publishing into their hub maps."""

    def __init__(self, hub: EventHub, feeds: Sequence[tuple[KernelRingReader, EventMap]]) -> None:
        self.hub = hub
        self._feeds = list(feeds)

    @classmethod
    def open(
        cls,
        hub: EventHub,
        maps: Sequence[tuple[EventMap, lb.FdLike]],
        *,
        budget: int = DEFAULT_BUDGET,
    ) -> EventFeeds:
        """A reader per ``(hub map, map fd)``; the fds are dup'ed (the caller keeps its own)."""
        opened: list[tuple[KernelRingReader, EventMap]] = []
        try:
            for emap, fd in maps:
                opened.append((KernelRingReader(fd, emap.name, budget=budget), emap))
        except BaseException:
            for reader, _ in opened:
                reader.close()
            raise
        return cls(hub, opened)

    def start(self) -> None:
        """Starts every reader on the running loop."""
        for reader, emap in self._feeds:
            reader.start(emap.publish)
            log.info("reading events", extra={"map": emap.name, "size": reader.size})

    def statistics(self) -> list[ReaderStatistics]:
        return [reader.statistics() for reader, _ in self._feeds]

    def close(self) -> None:
        """Stops and closes the readers, then ends every subscription."""
        for reader, _ in self._feeds:
            reader.close()
        self._feeds = []
        self.hub.close()


class MapSource(Protocol):
    """What the feeds need of the kernel side (a :class:`ringbridge.backends.Backend`)."""

    def map_fd(self, name: str) -> lb.Fd: ...

    def declared_value(self, map_name: str) -> tuple[int, model.Type | None]: ...


def _flag(spec: EventSpec) -> str:
    where = f"--event-pin {spec.pin}" if spec.pin is not None else f"--event-map {spec.name}"
    return f"{where}={spec.type_name}" if spec.type_name else where


def _decoder(spec: EventSpec, source: MapSource, types: TypeSources) -> TypeDecoder | None:
    if spec.type_name is None:
        return None
    flag = _flag(spec)
    if spec.pin is not None:
        # Another loader's map: what it declares is not ours to read back.
        found = types.find_for(spec.type_name, flag)
    else:
        declared = source.declared_value(spec.name)
        found = types.find_for(spec.type_name, flag, map_name=spec.name, declared=declared)
    try:
        return types.decoder(found)
    except RingbridgeError as exc:
        raise ConfigError(f"{flag}: {exc.message}") from exc


def _open_fd(spec: EventSpec, source: MapSource) -> lb.Fd:
    if spec.pin is None:
        return source.map_fd(spec.name)
    try:
        fd = lb.obj_get(spec.pin)
    except RingbridgeError as exc:
        raise ConfigError(f"--event-pin {spec.pin}: cannot open the pin: {exc.message}") from exc
    try:
        info = lb.map_info(fd, name=str(spec.pin))
    except RingbridgeError as exc:
        fd.close()
        raise ConfigError(f"--event-pin {spec.pin}: not a BPF map ({exc.message})") from exc
    if info.type != lb.BPF_MAP_TYPE_RINGBUF:
        fd.close()
        raise ConfigError(
            f"--event-pin {spec.pin}: map {info.name!r} has type {info.type}, not "
            "BPF_MAP_TYPE_RINGBUF: only kernel ring buffers carry events out"
        )
    return fd


def open_event_feeds(
    specs: Sequence[EventSpec],
    source: MapSource,
    types: TypeSources,
    *,
    budget: int = DEFAULT_BUDGET,
) -> EventFeeds:
    """A hub with one map per spec (typed through ``types``), each with its reader.

    Nothing starts reading until :meth:`EventFeeds.start`.
    """
    hub = EventHub()
    fds: list[lb.Fd] = []
    try:
        maps: list[tuple[EventMap, lb.FdLike]] = []
        for spec in specs:
            decoder = _decoder(spec, source, types)
            fd = _open_fd(spec, source)
            fds.append(fd)
            maps.append((hub.add(spec.name, decoder=decoder, type_name=spec.type_name), fd))
        return EventFeeds.open(hub, maps, budget=budget)
    finally:
        # The readers hold their own duplicates.
        for fd in fds:
            fd.close()
