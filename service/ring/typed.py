"""Typed samples: dicts in, the exact C layout of a BTF type into the ring.

The schema layer does the packing -- the same decoder and validator the
service runs on JSON batches (:class:`ringbridge.schema.SampleCodec`): missing
members are zero, unknown members, wrong types and out-of-range values are
refused with a :class:`~ringbridge.errors.SampleError` naming the sample and
the path of the bad value. Not the fastest path (each call goes through the
JSON decoder): for hot loops, pack the bytes yourself into :meth:`reserve`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from ..core import ring as core
from ..kernel.ringmap import ring_btf
from ..schema import EncodedBatch, SampleCodec
from ..schema.btf import BtfSource

if TYPE_CHECKING:
    from .buffer import Commit, UserRingBuffer

__all__ = ["TypedRing"]


class TypedRing:
    """Samples of one C type into one :class:`~ringbridge.ring.UserRingBuffer`."""

    def __init__(self, ring: UserRingBuffer, codec: SampleCodec) -> None:
        self.ring = ring
        self.codec = codec

    @classmethod
    def of(
        cls,
        ring: UserRingBuffer,
        btf_source: str | os.PathLike[str] | BtfSource | None,
        type_name: str,
    ) -> TypedRing:
        """The codec of ``type_name`` from ``btf_source``: a BPF object file (its
        BTF, read without loading it), any BTF handle, or None for the kernel's
        BTF of the ring (the map's own, else that of a loaded program using it)."""
        if btf_source is None:
            with ring_btf(ring.info, ring.what) as btf:
                return cls(ring, SampleCodec.from_btf(btf, type_name, where=ring.what))
        if isinstance(btf_source, str | os.PathLike):
            return cls(ring, SampleCodec.from_object(Path(btf_source), type_name))
        return cls(ring, SampleCodec.from_btf(btf_source, type_name))

    @property
    def type_name(self) -> str:
        return self.codec.type_name

    @property
    def sample_size(self) -> int:
        """Bytes of one sample (the C type's size)."""
        return self.codec.sample_size

    def encode_many(self, samples: Iterable[Mapping[str, Any]]) -> EncodedBatch:
        """Samples as one batch of records, validated (SampleError names the bad one)."""
        body = msgspec.json.encode({"samples": list(samples)})
        return self.codec.decode_json_batch(
            body, ring_size=self.ring.size, max_sample_bytes=core.MAX_SAMPLE_LEN
        )

    def encode(self, sample: Mapping[str, Any]) -> bytes:
        """The payload bytes of one sample."""
        batch = self.encode_many([sample])
        return bytes(batch.records[core.HDR_SIZE : core.HDR_SIZE + batch.payload_bytes])

    def decode(self, payload: bytes | bytearray | memoryview) -> dict[str, Any]:
        """The members of one sample's bytes, as :meth:`send` takes them."""
        return self.codec.decode_sample(payload)

    def send(self, sample: Mapping[str, Any]) -> Commit:
        """Commits one sample; :class:`~ringbridge.errors.RingFullError` at once if no room."""
        return self.ring.commit_batch(self.encode_many([sample]))

    def send_many(self, samples: Iterable[Mapping[str, Any]]) -> Commit:
        """Commits the samples as one batch, all or nothing (one producer_pos store)."""
        return self.ring.commit_batch(self.encode_many(samples))

    def send_blocking(self, sample: Mapping[str, Any], timeout: float | None = None) -> Commit:
        """:meth:`send`, waiting for room up to ``timeout`` seconds (TimeoutError)."""
        return self.ring.commit_batch_blocking(self.encode_many([sample]), timeout)

    async def send_async(self, sample: Mapping[str, Any], timeout: float | None = None) -> Commit:
        """:meth:`send_blocking` on the running event loop."""
        return await self.ring.commit_batch_async(self.encode_many([sample]), timeout)

    def __repr__(self) -> str:
        return f"TypedRing({self.type_name!r} into {self.ring.what})"
