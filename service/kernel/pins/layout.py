"""What each pin set ringbridge makes holds, by name.

- The built-in consumer's set: its four maps and three programs under their
  object names, plus the identity record (:mod:`.meta`).
- A user object's set: one pin per map (:func:`pin_name`), plus the identity
  record; ringbridge made the directory whole, so every entry in it is ours.
- In either set, and alone in ``--pin-dir`` beside a ring another loader
  pinned: ringbridge's own small state records (:data:`STATE_PINS`: the
  fleet cursor, the idempotency keys), made on first use. They are optional
  entries: a set is complete with or without them, and they go with it
  (``unpin``). Their
  names are longer than a BPF object name (15 characters), so no map's pin
  can take one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

#: The identity record every set holds (see :mod:`.meta`).
META_PIN: Final = "ringbridge_meta"

RING_MAP: Final = "ringbridge_ring"
COUNTERS_MAP: Final = "ringbridge_counters"
CTL_MAP: Final = "ringbridge_ctl"
TIMER_MAP: Final = "ringbridge_timer"
DRAIN_PROG: Final = "ringbridge_drain"
ARM_PROG: Final = "ringbridge_arm_timer"
DISARM_PROG: Final = "ringbridge_disarm_timer"
#: The fleet front door's cursor (``ringbridge.fleet.cursor``).
CURSOR_PIN: Final = "ringbridge_fleet_cursor"
#: The idempotency keys of the last keyed batches committed (see :mod:`.keys`).
KEYS_PIN: Final = "ringbridge_idempotency_keys"
#: ringbridge's own state records: optional entries of every pin set.
STATE_PINS: Final = frozenset({CURSOR_PIN, KEYS_PIN})
BUILTIN_MAPS: Final = (RING_MAP, COUNTERS_MAP, CTL_MAP, TIMER_MAP)
BUILTIN_PROGS: Final = (DRAIN_PROG, ARM_PROG, DISARM_PROG)


def pin_name(map_name: str) -> str:
    """The bpffs name of a map's pin: bpffs refuses "." (``obj.bss`` -> ``obj_bss``)."""
    return map_name.replace(".", "_")


@dataclass(frozen=True)
class RingbridgePins:
    """Where each pinned object of the built-in consumer's set lives."""

    dir: Path
    ring: Path
    counters: Path
    ctl: Path
    timer: Path
    drain: Path
    arm_timer: Path
    disarm_timer: Path
    meta: Path  # identity record: which object made the set

    @classmethod
    def under(cls, pin_dir: Path) -> RingbridgePins:
        d = Path(pin_dir)
        return cls(
            dir=d,
            ring=d / RING_MAP,
            counters=d / COUNTERS_MAP,
            ctl=d / CTL_MAP,
            timer=d / TIMER_MAP,
            drain=d / DRAIN_PROG,
            arm_timer=d / ARM_PROG,
            disarm_timer=d / DISARM_PROG,
            meta=d / META_PIN,
        )

    def maps(self) -> tuple[Path, ...]:
        return (self.ring, self.counters, self.ctl, self.timer)

    def programs(self) -> tuple[Path, ...]:
        return (self.drain, self.arm_timer, self.disarm_timer)

    def all(self) -> tuple[Path, ...]:
        """Every pin, the identity record last (see :func:`.unpin.remove_pins`)."""
        return (*self.maps(), *self.programs(), self.meta)

    def names(self) -> frozenset[str]:
        """The names a complete set holds (besides the optional :data:`STATE_PINS`)."""
        return frozenset(p.name for p in self.all())
