"""ringbridge's pins on bpffs, in one place.

- where a pin set may live: a directory on bpffs (:mod:`.bpffs`);
- what each set holds: the built-in consumer's names, a user object's maps,
  ringbridge's own state records in either (:mod:`.layout`);
- how a new set appears: staged, then renamed into place (:mod:`.staging`);
- which object made a set, and the next sample seq: the identity record
  (:mod:`.meta`); the idempotency keys of the batches committed (:mod:`.keys`);
- how a set goes: :func:`unpin` for both kinds (:mod:`.unpin`);
- the producer lock of older versions, retired (:mod:`.legacy`); the lock
  itself is the ring's own (:mod:`ringbridge.ring.lock`).
"""

from __future__ import annotations

from .bpffs import BPF_FS_MAGIC, check_pin_dir, is_bpffs, keep_private
from .layout import (
    ARM_PROG,
    BUILTIN_MAPS,
    BUILTIN_PROGS,
    COUNTERS_MAP,
    CTL_MAP,
    CURSOR_PIN,
    DISARM_PROG,
    DRAIN_PROG,
    KEYS_PIN,
    META_PIN,
    RING_MAP,
    STATE_PINS,
    TIMER_MAP,
    RingbridgePins,
    pin_name,
)
from .legacy import legacy_lock_path, retire_legacy_lock
from .meta import PinMeta, object_digest
from .staging import staged
from .unpin import refuse_orphan_state, remove_pins, retire_leftover_lock, unpin, unpin_hint

__all__ = [
    "ARM_PROG",
    "BPF_FS_MAGIC",
    "BUILTIN_MAPS",
    "BUILTIN_PROGS",
    "COUNTERS_MAP",
    "CTL_MAP",
    "CURSOR_PIN",
    "DISARM_PROG",
    "DRAIN_PROG",
    "KEYS_PIN",
    "META_PIN",
    "RING_MAP",
    "STATE_PINS",
    "TIMER_MAP",
    "PinMeta",
    "RingbridgePins",
    "check_pin_dir",
    "is_bpffs",
    "keep_private",
    "legacy_lock_path",
    "object_digest",
    "pin_name",
    "refuse_orphan_state",
    "remove_pins",
    "retire_leftover_lock",
    "retire_legacy_lock",
    "staged",
    "unpin",
    "unpin_hint",
]
