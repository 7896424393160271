"""The fast path of JSON batches: a sample type of plain scalars at fixed
offsets, packed by one precompiled :class:`struct.Struct` per record.

Missing fields default to 0 inside msgspec, and the record's Struct writes
header, fields, C padding and record padding at once (``pack`` + one
``b"".join``; ``pack_into`` a preallocated ``bytearray`` measured no faster,
0.22 vs 0.20 µs a sample). Anything it cannot decide exactly raises
:class:`Fallback`, and the batch is redone on the exact path, which reports
the first bad sample.
"""

from __future__ import annotations

import struct
from itertools import repeat
from operator import attrgetter
from typing import Any, Final

import msgspec
from msgspec import UNSET

from ..core import ring as core
from .batch import EncodedBatch
from .jsonshape import decoders, raw_field
from .kinds.base import tuple_getter
from .kinds.composite import CompositeNode

__all__ = ["Fallback", "FlatLayout"]

_ZERO_OF: Final = {"?": False, "e": 0.0, "f": 0.0, "d": 0.0}


class Fallback(Exception):
    """The fast path cannot decide exactly; redo the batch on the exact path."""


class FlatLayout:
    """The fast path of a struct of plain scalars: one struct.Struct per record."""

    def __init__(self, node: CompositeNode, record_size: int, accepts_raw: bool) -> None:
        self.size = node.size
        self.record_size = record_size
        self.accepts_raw = accepts_raw
        slots = sorted(node.slots, key=lambda s: s.offset)
        parts: list[str] = []
        cur = 0
        for s in slots:
            assert s.node.code is not None
            if s.offset > cur:
                parts.append(f"{s.offset - cur}x")
            parts.append(s.node.code)
            cur = s.offset + s.node.size
        tail = record_size - core.HDR_SIZE - cur
        self.record = struct.Struct("<II" + "".join(parts) + (f"{tail}x" if tail else ""))
        assert self.record.size == record_size, (self.record.size, record_size)
        self.zeros = tuple(_ZERO_OF.get(s.node.code or "", 0) for s in slots)
        fields: list[tuple[str, Any, Any]] = [
            (s.attr, s.node.json_type(), msgspec.field(default=z, name=s.name))
            for s, z in zip(slots, self.zeros, strict=True)
        ]
        if accepts_raw:
            fields.append(raw_field())
        sample = msgspec.defstruct("FastSample", fields, forbid_unknown_fields=True, kw_only=True)
        self.decoders = decoders(sample, "Fast")
        attrs = [s.attr for s in slots]
        # One getter per field, for packing a batch column-wise at C speed.
        self.columns = tuple(attrgetter(a) for a in attrs)
        self.get = tuple_getter(attrs)

    @staticmethod
    def eligible(node: CompositeNode) -> bool:
        return node.kind == "struct" and all(
            s.node.code is not None and not s.groups for s in node.slots
        )

    def encode(
        self,
        samples: list[Any],
        ring_size: int,
        limit: int,
        *,
        raw_possible: bool = True,
    ) -> EncodedBatch:
        """Plain-scalar layouts, missing fields already 0, no mixed samples.

        Raises Fallback on anything unusual: every error goes through the
        exact path, which reports the first bad sample.
        """
        n = len(samples)
        if n == 0:
            raise Fallback
        pack = self.record.pack
        size = self.size
        if not raw_possible and self.columns:
            return self._encode_columns(samples, ring_size, limit)
        get = self.get
        zeros = self.zeros
        hdr = core.RECORD_HEADER.pack
        pads = core.PADDING
        parts: list[bytes] = []
        ap = parts.append
        raw_bytes = 0
        raw_count = 0
        raw_step = 0
        try:
            if self.accepts_raw:
                for s in samples:
                    d = s.raw
                    if d is UNSET:
                        ap(pack(size, 0, *get(s)))
                    else:
                        m = len(d)
                        if m > limit or get(s) != zeros:
                            raise Fallback
                        ap(hdr(m, 0))
                        ap(d)
                        ap(pads[-m % 8])
                        raw_bytes += m
                        raw_count += 1
                        raw_step += core.HDR_SIZE + m + (-m % 8)
            else:
                # A comprehension, not a loop of appends: ~15% faster per sample
                # (this loop is most of a typed batch's cost).
                parts = [pack(size, 0, *get(s)) for s in samples]
        except (struct.error, OverflowError):
            raise Fallback from None
        struct_count = n - raw_count
        if struct_count and size > limit:
            raise Fallback
        nbytes = struct_count * self.record_size + raw_step
        if nbytes > ring_size:
            raise Fallback
        payload = struct_count * size + raw_bytes
        return EncodedBatch(b"".join(parts), n, nbytes, payload)

    def _encode_columns(self, samples: list[Any], ring_size: int, limit: int) -> EncodedBatch:
        """Struct samples only: every record packed with no Python code per sample.

        ``map`` over one getter per field, ``zip`` with the constant header
        words, ``starmap`` of the record's ``Struct.pack``, one ``join``: all
        iteration happens in C, ~30% faster than a comprehension per sample.
        """
        n = len(samples)
        size = self.size
        try:
            records = b"".join(
                map(
                    self.record.pack,
                    repeat(size),
                    repeat(0),
                    *[map(g, samples) for g in self.columns],
                )
            )
        except (struct.error, OverflowError):
            raise Fallback from None
        if size > limit:
            raise Fallback
        nbytes = n * self.record_size
        if nbytes > ring_size:
            raise Fallback
        return EncodedBatch(records, n, nbytes, n * size)
