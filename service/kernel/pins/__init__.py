"""ringbridge's pins on bpffs, in one place.

- where a pin set may live: a directory on bpffs (:mod:`.bpffs`);
- what each set holds: the built-in consumer's names, a user object's maps
  (:mod:`.layout`);
- how a new set appears: staged, then renamed into place (:mod:`.staging`);
- which object made a set, and the next sample seq: the identity record
  (:mod:`.meta`);
- how a set goes: :func:`unpin` for both kinds (:mod:`.unpin`);
- who may produce into its ring: the producer lock (:mod:`.lock`).
"""

from __future__ import annotations

from .bpffs import BPF_FS_MAGIC, check_pin_dir, is_bpffs
from .layout import (
    ARM_PROG,
    BUILTIN_MAPS,
    BUILTIN_PROGS,
    COUNTERS_MAP,
    CTL_MAP,
    DISARM_PROG,
    DRAIN_PROG,
    META_PIN,
    RING_MAP,
    TIMER_MAP,
    RingbridgePins,
    pin_name,
)
from .lock import lock_producer, lock_ring_pin, producer_lock_path
from .meta import PinMeta, object_digest
from .staging import staged
from .unpin import remove_pins, unpin, unpin_hint

__all__ = [
    "ARM_PROG",
    "BPF_FS_MAGIC",
    "BUILTIN_MAPS",
    "BUILTIN_PROGS",
    "COUNTERS_MAP",
    "CTL_MAP",
    "DISARM_PROG",
    "DRAIN_PROG",
    "META_PIN",
    "RING_MAP",
    "TIMER_MAP",
    "PinMeta",
    "RingbridgePins",
    "check_pin_dir",
    "is_bpffs",
    "lock_producer",
    "lock_ring_pin",
    "object_digest",
    "pin_name",
    "producer_lock_path",
    "remove_pins",
    "staged",
    "unpin",
    "unpin_hint",
]
