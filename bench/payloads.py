"""Bodies and frames of the benchmark, built before any clock starts.

Every sample carries ``struct ringbridge_sample`` (kind cycling, value = its
index) padded with zeros to the sample size, on every path, so the kernel's
per-kind counters see the same content whichever way it came in. JSON
batches use struct samples ``{"kind", "flags", "value"}`` (16 B, the struct's
size): the typed path.
"""

from __future__ import annotations

import struct

import msgspec

from ringbridge.core import ring as core

SAMPLE = struct.Struct("<IIQ")

#: Distinct batches a load generator cycles through (content varies, cost does not).
DISTINCT = 8


def sample_payload(i: int, size: int) -> bytes:
    return SAMPLE.pack(i % 256, 0, i) + bytes(size - SAMPLE.size)


def binary_batch(size: int, count: int, start: int = 0) -> bytes:
    """``count`` samples of ``size`` bytes in the record format (u32 len, u32 0, payload, pad)."""
    return core.encode_batch(sample_payload(i, size) for i in range(start, start + count))


def binary_batches(size: int, count: int, n: int = DISTINCT) -> list[bytes]:
    return [binary_batch(size, count, k * count) for k in range(n)]


def samples_for_bytes(size: int, nbytes: int) -> int:
    """How many samples of ``size`` bytes fill ``nbytes`` of ring records."""
    return max(1, nbytes // core.record_size(size))


def _struct_samples(count: int, start: int) -> list[dict[str, int]]:
    return [{"kind": i % 256, "flags": 0, "value": i} for i in range(start, start + count)]


def json_body(count: int, start: int = 0) -> bytes:
    """``{"samples": [...]}`` of ``count`` struct samples (an HTTP body)."""
    return msgspec.json.encode({"samples": _struct_samples(count, start)})


def json_frames(count: int, n: int = DISTINCT) -> list[bytes]:
    """WebSocket text frames ``{"id": k, "samples": [...]}`` of ``count`` struct samples."""
    return [
        msgspec.json.encode({"id": k, "samples": _struct_samples(count, k * count)})
        for k in range(n)
    ]
