"""Events out of the kernel: ``BPF_MAP_TYPE_RINGBUF`` maps read out and fanned out.

* :mod:`.hub` -- per-map numbering and fan-out to bounded subscriber buffers
  (no I/O): :class:`EventHub`, :class:`EventMap`, :class:`Subscription`;
* :mod:`.feeds` -- the kernel readers (:mod:`ringbridge.kernel.eventring`)
  that feed the hub, and the ``--event-map``/``--event-pin`` specs.

It sits above the kernel binding and the schema layer (typed events decode
through :class:`ringbridge.schema.TypeDecoder`) and below the API.
"""

from .feeds import EventFeeds, EventSpec, check_event_maps, parse_event_spec
from .hub import Event, EventHub, EventMap, EventMapStatistics, Lost, Subscription

__all__ = [
    "Event",
    "EventFeeds",
    "EventHub",
    "EventMap",
    "EventMapStatistics",
    "EventSpec",
    "Lost",
    "Subscription",
    "check_event_maps",
    "parse_event_spec",
]
