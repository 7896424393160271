"""The built-in consumer's per-CPU counters: their layout, and a consistent read.

``struct ringbridge_counters`` (``bpf/ringbridge.h``) is one value per CPU.
Everything is summed over the CPUs here, in Python integers, so nothing
wraps: a kind's value sum is, on each CPU, ``kind_value_hi * 2**64 +
kind_value`` (the BPF program carries into the high word), and the CPUs'
sums are added exactly.

A carry changes two words of one CPU. The program brackets it with
``carry_end`` (bumped first) and ``carry_begin`` (set to the same count last,
both fenced); the kernel copies the value from low to high addresses, so a
copy with ``carry_begin == carry_end`` on every CPU holds no half-done carry.
Otherwise the map is read again. (The copy is a plain ``memcpy``: on a CPU
that reorders the loads of one copy, the check narrows the window rather
than closing it; that window is a carry -- once per 2**64 of a kind's sum on
one CPU -- overlapping a scrape.)
"""

from __future__ import annotations

import builtins
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "COUNTERS_VALUE_SIZE",
    "DRAIN_ERROR_NAMES",
    "MAX_KINDS",
    "KernelCounters",
    "read_consistent",
]

MAX_KINDS: Final = 256
DRAIN_ERROR_NAMES: Final = ("EINVAL", "E2BIG", "EBUSY", "OTHER")

# Word indexes of struct ringbridge_counters (all u64): samples, bytes,
# drain_calls, drain_errors[4], short_samples, kind_overflow, carry_begin,
# kind_count[256], kind_value[256], kind_value_hi[256], carry_end.
DRAIN_ERRORS: Final = 3
SHORT_SAMPLES: Final = DRAIN_ERRORS + len(DRAIN_ERROR_NAMES)
KIND_OVERFLOW: Final = SHORT_SAMPLES + 1
CARRY_BEGIN: Final = KIND_OVERFLOW + 1
KIND_COUNT: Final = CARRY_BEGIN + 1
KIND_VALUE: Final = KIND_COUNT + MAX_KINDS
KIND_VALUE_HI: Final = KIND_VALUE + MAX_KINDS
CARRY_END: Final = KIND_VALUE_HI + MAX_KINDS
WORDS: Final = CARRY_END + 1

_COUNTERS: Final = struct.Struct(f"={WORDS}Q")
COUNTERS_VALUE_SIZE: Final = _COUNTERS.size
_CARRY_BEGIN_AT: Final = 8 * CARRY_BEGIN
_CARRY_END_AT: Final = 8 * CARRY_END

#: Reads of a value caught in a carry before the last one is taken as it is.
#: A carry is a few stores: a second read practically never catches another.
READ_ATTEMPTS: Final = 8


def in_carry(raw: bytes) -> bool:
    """Whether this CPU's copy was taken while a carry was half done."""
    begin = int.from_bytes(raw[_CARRY_BEGIN_AT : _CARRY_BEGIN_AT + 8], "little")
    end = int.from_bytes(raw[_CARRY_END_AT : _CARRY_END_AT + 8], "little")
    return begin != end


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
    kind_value: tuple[int, ...]  # per-kind sums, exact (no modulo: carried past 2**64)

    @classmethod
    def from_percpu(cls, values: Sequence[builtins.bytes]) -> KernelCounters:
        total = [0] * WORDS
        for raw in values:
            for i, v in enumerate(_COUNTERS.unpack_from(raw)):
                total[i] += v
        lo = total[KIND_VALUE : KIND_VALUE + MAX_KINDS]
        hi = total[KIND_VALUE_HI : KIND_VALUE_HI + MAX_KINDS]
        return cls(
            samples=total[0],
            bytes=total[1],
            drain_calls=total[2],
            drain_errors=dict(
                zip(DRAIN_ERROR_NAMES, total[DRAIN_ERRORS:SHORT_SAMPLES], strict=True)
            ),
            short_samples=total[SHORT_SAMPLES],
            kind_overflow=total[KIND_OVERFLOW],
            kind_count=tuple(total[KIND_COUNT : KIND_COUNT + MAX_KINDS]),
            # Per CPU hi * 2**64 + lo; summed over CPUs, the same.
            kind_value=tuple((h << 64) + v for h, v in zip(hi, lo, strict=True)),
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


def read_consistent(lookup: Callable[[], list[bytes]]) -> KernelCounters:
    """The counters from ``lookup()`` (one value per CPU), read again while a carry shows."""
    values = lookup()
    for _ in range(READ_ATTEMPTS - 1):
        if not any(in_carry(raw) for raw in values):
            break
        values = lookup()
    return KernelCounters.from_percpu(values)
