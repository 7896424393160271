"""The exact path of JSON batches: every sample type, every error.

Every member defaults to ``UNSET``, so the path knows what a sample named
(``{"data": ..., "kind": 0}`` must be refused although the fast path would
see ``kind == 0`` as absent). The compiled nodes pack each sample into a
zeroed record and check what msgspec cannot; the first bad sample is
reported by index and path.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET

from ..core import ring as core
from ..errors import MalformedJSONError, RecordTooLargeError, SampleError
from .batch import EncodedBatch
from .jsonerrors import NO_TYPE, lower_first, sample_error, sample_index
from .jsonshape import decoders, raw_field
from .kinds.base import PackError
from .kinds.composite import CompositeNode

__all__ = ["ExactPath"]


class ExactPath:
    """Decodes, packs and checks batches of ``node`` samples, one at a time."""

    def __init__(self, node: CompositeNode, *, typed: bool, accepts_raw: bool) -> None:
        self.node = node
        self.typed = typed
        self.accepts_raw = accepts_raw
        self.sample_size = node.size
        self.record_size = core.record_size(node.size)
        self._names = tuple(s.name for s in node.slots)
        self._nf = len(self._names)
        sample = node.struct_type([raw_field()] if accepts_raw else [], type_name="Sample")
        self._decoders = decoders(sample, "Exact")
        self._one = msgspec.json.Decoder(sample)
        self._raw = decoders(msgspec.Raw, "Raw")
        self._zero_record = core.RECORD_HEADER.pack(node.size, 0) + bytes(
            self.record_size - core.HDR_SIZE
        )

    def decode(
        self, body: bytes | str, *, frame: bool, ring_size: int, limit: int
    ) -> tuple[Any, EncodedBatch]:
        dec = self._decoders.frame if frame else self._decoders.batch
        try:
            obj = dec.decode(body)
        except msgspec.ValidationError as exc:
            k = sample_index(exc)
            if k > 0:
                # msgspec stops at the first sample it cannot type; an earlier
                # one may still break a limit only Python checks. Check them.
                self._check_prefix(body, k, frame=frame, ring_size=ring_size, limit=limit)
            raise sample_error(
                exc, self.node, typed=self.typed, accepts_raw=self.accepts_raw
            ) from None
        except msgspec.DecodeError as exc:
            raise MalformedJSONError(f"invalid JSON: {lower_first(str(exc))}") from None
        return (obj.id if frame else None), self.encode(obj.samples, ring_size, limit)

    def _check_prefix(
        self, body: bytes | str, k: int, *, frame: bool, ring_size: int, limit: int
    ) -> None:
        rdec = self._raw.frame if frame else self._raw.batch
        sdec = self._one
        try:
            raws = rdec.decode(body).samples[:k]
            prefix = [sdec.decode(r) for r in raws]
        except msgspec.DecodeError:
            # Malformed after the bad sample: the prefix cannot be isolated;
            # the typing error at k is reported.
            return
        self.encode(prefix, ring_size, limit, allow_partial=True)

    def encode(
        self, samples: list[Any], ring_size: int, limit: int, *, allow_partial: bool = False
    ) -> EncodedBatch:
        if not samples and not allow_partial:
            raise SampleError('empty batch: "samples" holds no sample', -1)
        node = self.node
        pack = node.pack
        size = self.sample_size
        rec = self.record_size
        zero_record = self._zero_record
        hdr = core.RECORD_HEADER.pack
        pads = core.PADDING
        out = bytearray()
        nbytes = 0
        payload = 0
        for i, s in enumerate(samples):
            d = s.raw if self.accepts_raw else UNSET
            if d is not UNSET:
                vals = node.values(s)
                if vals.count(UNSET) != self._nf:
                    named = [n for n, v in zip(self._names, vals, strict=True) if v is not UNSET]
                    raise SampleError(
                        f'a sample has either "data" or {node.ctype} members, '
                        f"not both (also has {', '.join(repr(n) for n in named)})",
                        i,
                        f"samples[{i}]",
                    )
                m = len(d)
                self._check_len(m, limit, ring_size, i, "data sample")
                step = core.record_size(m)
                out += hdr(m, 0)
                out += d
                out += pads[-m % 8]
            else:
                if not self.typed:
                    raise SampleError(NO_TYPE, i, f"samples[{i}]")
                m = size
                self._check_len(m, limit, ring_size, i, f"{node.ctype} sample")
                step = rec
                start = len(out)
                out += zero_record
                try:
                    pack(out, start + core.HDR_SIZE, s)
                except PackError as exc:
                    raise SampleError(exc.message, i, f"samples[{i}]{exc.path}") from None
            nbytes += step
            payload += m
            if nbytes > ring_size:
                raise RecordTooLargeError(
                    f"batch reaches {nbytes} bytes of records here and can never fit "
                    f"a ring of {ring_size} bytes; split it",
                    i,
                )
        return EncodedBatch(out, len(samples), nbytes, payload)

    @staticmethod
    def _check_len(m: int, limit: int, ring_size: int, i: int, what: str) -> None:
        if m > limit:
            if m > core.max_payload(ring_size):
                core.check_payload_len(m, ring_size, i)
            raise RecordTooLargeError(
                f"{what} of {m} bytes exceeds the limit of {limit} bytes (max_sample_bytes)", i
            )
