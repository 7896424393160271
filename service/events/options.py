"""The ``--event-*`` settings, mixed into ``Settings`` (as the fleet's are).

Kept apart from :mod:`ringbridge.settings` so that model stays readable; the
fields are ordinary Settings fields (a ``serve`` flag, a ``RINGBRIDGE_EVENT_*``
variable and a settings-file key each).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from ..errors import ConfigError
from ..settings_types import Names, Size
from .feeds import EventSpec, parse_event_spec

__all__ = ["EventSettings"]

_MiB = 1024 * 1024


class EventSettings(BaseModel):
    """Kernel ring buffers served on ``GET /v1/events`` (none unless named)."""

    event_map: Names = Field(
        default_factory=list,
        description="NAME[=TYPE]: a BPF_MAP_TYPE_RINGBUF of the object whose events "
        "subscribers read from GET /v1/events?map=NAME (WebSocket or Server-Sent Events); "
        "with TYPE (looked up like --sample-type) as typed JSON (repeatable)",
        json_schema_extra={"metavar": "NAME[=TYPE]"},
    )
    event_pin: Names = Field(
        default_factory=list,
        description="PATH[=TYPE]: a BPF_MAP_TYPE_RINGBUF another loader pinned, served as "
        "map=<the pin's file name> like --event-map (repeatable; works with --ring-pin)",
        json_schema_extra={"metavar": "PATH[=TYPE]"},
    )
    event_buffer_events: int = Field(
        default=1024,
        gt=0,
        description="events one subscriber of /v1/events may have waiting; beyond it that "
        'subscriber loses the newest and gets a {"lost": N} marker in their place',
    )
    event_buffer_bytes: Size = Field(
        default=4 * _MiB,
        gt=0,
        description="event bytes one subscriber of /v1/events may have waiting (K/M/G)",
    )

    @property
    def event_specs(self) -> list[EventSpec]:
        """The event maps to read out: ``--event-map`` ones, then ``--event-pin`` ones."""
        if not (self.event_map or self.event_pin):
            return []
        return [parse_event_spec(t) for t in self.event_map] + [
            parse_event_spec(t, pinned=True) for t in self.event_pin
        ]

    def _check_events(self) -> None:
        # Parsed now so that a bad spec stops the service before it loads anything.
        seen: set[str] = set()
        for spec in self.event_specs:
            if spec.name in seen:
                raise ConfigError(
                    f"event map {spec.name!r} is named twice (--event-map, or the file name "
                    "of an --event-pin): subscribers pick a map by its name"
                )
            seen.add(spec.name)
