"""Samples as clients give them, and the batch bodies they become.

A sample is one of:

- a ``dict`` of the sample struct's fields (``{"kind": 1, "value": 5}``),
  validated by the server against the struct in its BPF object's BTF;
- a :class:`Sample`, the default struct (``struct ringbridge_sample {u32
  kind; u32 flags; u64 value;}``), sent as its fields;
- ``bytes``: a raw payload, sent as is.

A batch whose samples are all ``bytes`` goes out in the binary record format
(the ring's own, copied into the ring as is once validated); any other batch
as JSON, with bytes as ``{"data": "<base64>"}``.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from ..core import ring as core
from ..errors import ClientError

_DEFAULT = struct.Struct("<IIQ")


@dataclass(frozen=True)
class Sample:
    """The default sample struct (``bpf/ringbridge.h``)."""

    kind: int
    value: int = 0
    flags: int = 0

    def fields(self) -> dict[str, int]:
        return {"kind": self.kind, "flags": self.flags, "value": self.value}

    def pack(self) -> bytes:
        """The struct's bytes, for binary batches (little-endian, as on x86-64/arm64)."""
        return _DEFAULT.pack(self.kind, self.flags, self.value)


SampleLike = Mapping[str, Any] | Sample | bytes | bytearray | memoryview

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True)
class Body:
    """One batch, encoded: what to send and how many samples it holds."""

    payload: bytes
    binary: bool
    count: int

    @property
    def content_type(self) -> str:
        return "application/octet-stream" if self.binary else "application/json"


def _json_sample(s: SampleLike, i: int) -> Any:
    if isinstance(s, Sample):
        return s.fields()
    if isinstance(s, bytes | bytearray | memoryview):
        return {"data": base64.b64encode(s).decode()}
    if isinstance(s, Mapping):
        return s
    raise ClientError(
        f"sample {i}: a {type(s).__name__} is not a sample (give a dict of fields, "
        "a ringbridge.Sample or bytes)"
    )


def encode(samples: Iterable[SampleLike] | bytes) -> Body:
    """The body of one batch. ``bytes`` alone is taken as records already encoded."""
    if isinstance(samples, bytes | bytearray | memoryview):
        data = bytes(samples)
        return Body(data, True, sum(1 for _ in core.iter_records(data)))
    items = list(samples)
    if not items:
        raise ClientError("empty batch: give at least one sample")
    if all(isinstance(s, bytes | bytearray | memoryview) for s in items):
        return Body(core.encode_batch(bytes(s) for s in items), True, len(items))  # type: ignore[arg-type]
    return Body(
        _encode({"samples": [_json_sample(s, i) for i, s in enumerate(items)]}), False, len(items)
    )


def ws_text_frame(frame_id: int, samples: Iterable[SampleLike]) -> tuple[str, int]:
    """A text frame ``{"id": frame_id, "samples": [...]}`` and its sample count."""
    items = [_json_sample(s, i) for i, s in enumerate(samples)]
    if not items:
        raise ClientError("empty batch: give at least one sample")
    return _encode({"id": frame_id, "samples": items}).decode(), len(items)
