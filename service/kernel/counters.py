"""The built-in consumer's counters: ``struct ringbridge_counters`` (bpf/ringbridge.h).

A per-CPU array of one value; :class:`KernelCounters` is that value summed
over CPUs. ``tests/schema/test_default_object.py`` checks the layout against
the object's BTF.
"""

from __future__ import annotations

import builtins
import struct
from dataclasses import dataclass
from typing import Final

__all__ = ["COUNTERS_VALUE_SIZE", "DRAIN_ERROR_NAMES", "MAX_KINDS", "KernelCounters"]

# struct ringbridge_counters: samples, bytes, drain_calls, drain_errors[4],
# short_samples, kind_overflow, kind_count[256], kind_value[256] (all u64).
MAX_KINDS: Final = 256
DRAIN_ERROR_NAMES: Final = ("EINVAL", "E2BIG", "EBUSY", "OTHER")
_COUNTERS_WORDS: Final = 3 + len(DRAIN_ERROR_NAMES) + 2 + 2 * MAX_KINDS
_COUNTERS: Final = struct.Struct(f"={_COUNTERS_WORDS}Q")
COUNTERS_VALUE_SIZE: Final = _COUNTERS.size
_U64_MASK: Final = 2**64 - 1


@dataclass(frozen=True)
class KernelCounters:
    """The BPF consumer's counters, summed over all CPUs."""

    samples: int
    bytes: int
    drain_calls: int
    drain_errors: dict[str, int]
    short_samples: int
    kind_overflow: int
    kind_count: tuple[int, ...]
    kind_value: tuple[int, ...]  # per-kind sums, modulo 2**64 like the kernel's

    @classmethod
    def from_percpu(cls, values: list[builtins.bytes]) -> KernelCounters:
        total = [0] * _COUNTERS_WORDS
        for raw in values:
            for i, v in enumerate(_COUNTERS.unpack_from(raw)):
                total[i] += v
        ne = len(DRAIN_ERROR_NAMES)
        kc = 3 + ne + 2
        return cls(
            samples=total[0],
            bytes=total[1],
            drain_calls=total[2],
            drain_errors=dict(zip(DRAIN_ERROR_NAMES, total[3 : 3 + ne], strict=True)),
            short_samples=total[3 + ne],
            kind_overflow=total[4 + ne],
            kind_count=tuple(total[kc : kc + MAX_KINDS]),
            kind_value=tuple(v & _U64_MASK for v in total[kc + MAX_KINDS :]),
        )

    def kinds(self) -> list[tuple[int, int, int]]:
        """``(kind, count, value sum)`` of the kinds that were seen (the rest are zeros)."""
        return [
            (kind, count, value)
            for kind, (count, value) in enumerate(
                zip(self.kind_count, self.kind_value, strict=True)
            )
            if count or value
        ]
