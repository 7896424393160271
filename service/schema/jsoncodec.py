"""JSON sample batches and WebSocket text frames -> ring records.

``{"samples": [S, ...]}`` where S is ``{"data": "<base64>"}`` (raw bytes) or an
object of the sample type's members, is decoded by msgspec into Struct types
compiled from the sample type's BTF (:mod:`ringbridge.schema.compiler`), so
msgspec checks in C what it can: JSON syntax, types (``true`` is not an int,
``1.0`` is not an int), integer ranges up to 64-bit, string and list lengths,
base64, enum names, unknown fields. The compiled nodes then pack each sample
into a zeroed record (padding and missing members stay zero) and check what
msgspec cannot (the top of u64, UTF-8 byte lengths, bitfield widths, one
member per union). The **whole** batch is validated before anything is
returned, so nothing of a bad batch can reach the ring; errors name the
sample index and the path of the bad value (``samples[3].hdr.ops[2]``).

Measured on this machine (2 vCPU, busy; Python 3.11, msgspec 0.22), per sample
in batches of 1,000: typed decode alone 0.11 µs; decode + pack of
``{"kind", "flags", "value"}`` samples ~0.40 µs with the flat zero-default
Struct below. So layouts made only of plain scalars at fixed offsets (the
default ``ringbridge_sample``) take a *fast* path (:mod:`.jsonfast`): missing
fields default to 0 inside msgspec and one precompiled :class:`struct.Struct`
writes each record. Everything else, every error, and batches mixing ``data``
samples with member names take the *exact* path (:mod:`.jsonexact`), whose
errors :mod:`.jsonerrors` words. This module picks the path; :mod:`.jsonshape`
holds the batch and frame envelopes, :mod:`.jsonlimits` the sample-count
bound checked before decoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import msgspec

from ..core import ring as core
from ..errors import MalformedJSONError, SampleError
from . import btf as btf_reader
from .batch import EncodedBatch
from .compiler import compile_type
from .jsonexact import ExactPath
from .jsonfast import Fallback, FlatLayout
from .jsonkeys import check_duplicate_keys
from .jsonlimits import check_sample_count, max_objects
from .jsonscan import JsonScanner
from .jsonshape import DATA, frame_id
from .kinds.base import BASE64_PATTERN
from .kinds.composite import CompositeNode

__all__ = ["DEFAULT_SAMPLE_TYPE", "SampleCodec", "frame_id"]

DEFAULT_SAMPLE_TYPE: Final = "ringbridge_sample"


class SampleCodec:
    """Decodes and validates JSON sample batches for one sample type.

    Build it from BTF: :meth:`from_object` (a BPF object file) or
    :meth:`from_btf` (any BTF handle, e.g. the kernel's BTF of a pinned
    map). It is immutable and holds only precompiled state, so one instance
    serves every request.
    """

    def __init__(self, node: CompositeNode, type_name: str | None = None) -> None:
        self.node = node
        # False for raw_only(): no sample type, only {"data": ...} samples.
        self.typed = type_name is not None or bool(node.name) or bool(node.slots)
        self.type_name = type_name or node.name
        self.sample_size = node.size
        self.record_size = core.record_size(node.size)
        # A type with its own `data` member has no raw form: any sample is
        # that type (a `data` key names the member).
        self.accepts_raw = DATA not in node.by_name
        self._exact = ExactPath(node, typed=self.typed, accepts_raw=self.accepts_raw)
        self._fast = (
            FlatLayout(node, self.record_size, self.accepts_raw)
            if self.typed and FlatLayout.eligible(node)
            else None
        )
        self._objects_per_sample = max(1, max_objects(node))
        # The native scanner, tried before anything else (see jsonscan).
        self.scanner = JsonScanner.for_node(node) if self.typed else None
        # Quoted JSON keys whose presence next to a `data` sample makes the
        # fast decoder's "absent == 0" ambiguous (see _maybe_mixed).
        names = tuple(s.name for s in node.slots)
        self._quoted = tuple(f'"{n}"'.encode() for n in names)
        self._quoted_str = tuple(f'"{n}"' for n in names)

    # -- construction -------------------------------------------------------

    @classmethod
    def from_btf(
        cls, btf: btf_reader.BtfSource, type_name: str, *, where: str = "BTF"
    ) -> SampleCodec:
        """The codec of the struct/union/typedef ``type_name`` in a BTF handle.

        ``where`` names the BTF's origin in errors (a path, ``map 'ring'``...).
        Raises :class:`~ringbridge.errors.SchemaError` for a missing type or a
        member with no JSON form.
        """
        t = btf_reader.find_type(btf, type_name, where=where)
        return cls(compile_type(t, f"{where}: {type_name}"), type_name)

    @classmethod
    def raw_only(cls) -> SampleCodec:
        """A codec without a sample type: ``{"data": "<base64>"}`` samples only."""
        return cls(CompositeNode("struct", "", 0, [], 0))

    @classmethod
    def from_object(cls, obj_path: Path, type_name: str = DEFAULT_SAMPLE_TYPE) -> SampleCodec:
        """The codec of ``type_name`` in the BTF of a BPF object file (opened, not loaded)."""
        from ..kernel import libbpf as lb

        with lb.BpfObject.open(obj_path) as obj:
            return cls.from_btf(obj.btf(), type_name, where=str(obj_path))

    # -- public API ---------------------------------------------------------

    def json_schema(self) -> dict[str, Any]:
        """JSON Schema (draft 2020-12) of one sample in a JSON batch."""
        head = {"$schema": "https://json-schema.org/draft/2020-12/schema"}
        raw = {
            "title": "raw sample",
            "type": "object",
            "required": [DATA],
            "additionalProperties": False,
            "properties": {
                DATA: {
                    "type": "string",
                    "contentEncoding": "base64",
                    "pattern": BASE64_PATTERN,
                    "description": "the payload bytes as they are",
                }
            },
        }
        if not self.typed:
            return {**head, **raw, "description": "no sample type: raw samples only"}
        typed = self.node.json_schema()
        if not self.accepts_raw:
            return {**head, **typed}
        return {
            **head,
            "title": f"one sample: {self.node.ctype} or raw bytes",
            "oneOf": [typed, raw],
        }

    def max_samples(self, max_batch_bytes: int) -> int:
        """The most samples a batch of ``max_batch_bytes`` ring bytes can hold.

        The smallest record is an empty ``data`` sample (8 bytes) when raw
        samples are accepted, else one struct record.
        """
        smallest = core.HDR_SIZE if self.accepts_raw else self.record_size
        return max(1, max_batch_bytes // smallest)

    def check_sample_count(self, body: bytes | str, max_samples: int) -> None:
        """RecordTooLargeError when ``body`` holds more than ``max_samples`` samples,
        found without decoding it (what the decode methods check first)."""
        check_sample_count(body, max_samples, self._objects_per_sample)

    def decode_json_batch(
        self,
        body: bytes | str,
        *,
        ring_size: int,
        max_sample_bytes: int,
        max_samples: int | None = None,
        native: bool = True,
    ) -> EncodedBatch:
        """``{"samples": [...]}`` -> records; raises SampleError / RecordTooLargeError.

        SampleError (422) names the first bad sample's index and the path of
        the bad value; RecordTooLargeError (413) a sample over
        ``max_sample_bytes``, the sample at which the batch outgrows the ring,
        or a body holding more than ``max_samples`` samples (refused before
        decoding them); index -1 means the body as a whole (not JSON, no
        ``samples``, empty list). ``native=False``: the native scanner is
        not tried (the caller did, see :class:`ringbridge.schema.payload.NativeScan`).
        """
        return self._decode(
            body,
            frame=False,
            ring_size=ring_size,
            limit=max_sample_bytes,
            max_samples=max_samples,
            native=native,
        )[1]

    def decode_ws_text_frame(
        self,
        data: str | bytes,
        *,
        ring_size: int,
        max_sample_bytes: int,
        max_samples: int | None = None,
        native: bool = True,
    ) -> tuple[Any, EncodedBatch]:
        """``{"id": <any>, "samples": [...]}`` -> (id, records).

        A refused frame's id, for its error ack, is :func:`frame_id`'s.
        ``native``: as :meth:`decode_json_batch`.
        """
        return self._decode(
            data,
            frame=True,
            ring_size=ring_size,
            limit=max_sample_bytes,
            max_samples=max_samples,
            native=native,
        )

    def encode_sample(self, **values: Any) -> bytes:
        """The payload bytes of one sample (missing members zero).

        Goes through the same JSON validation as a request, so it is the
        reference for tests and tools; not for hot paths.
        """
        batch = self.decode_json_batch(
            msgspec.json.encode({"samples": [values]}),
            ring_size=1 << 30,
            max_sample_bytes=core.MAX_SAMPLE_LEN,
        )
        return bytes(batch.records[core.HDR_SIZE : core.HDR_SIZE + self.sample_size])

    def decode_sample(self, payload: bytes | bytearray | memoryview) -> dict[str, Any]:
        """The JSON object of one sample's bytes (what :meth:`encode_sample` takes).

        Of a union, the member spanning the most bytes is shown.
        """
        if len(payload) < self.sample_size:
            raise SampleError(
                f"{len(payload)} bytes are shorter than {self.node.ctype} ({self.sample_size})"
            )
        out: dict[str, Any] = self.node.unpack(payload, 0)
        return out

    # -- decoding -----------------------------------------------------------

    def scan(
        self,
        body: bytes | str,
        *,
        frame: bool,
        ring_size: int,
        max_sample_bytes: int,
        max_samples: int | None = None,
    ) -> tuple[Any, EncodedBatch] | None:
        """(frame id, records) from the native scanner (:mod:`.jsonscan`), or None:
        there is none for this type, or it gave up and the exact path decides."""
        if self.scanner is None:
            return None
        return self.scanner.batch(
            body, frame=frame, ring_size=ring_size, limit=max_sample_bytes, max_samples=max_samples
        )

    def _decode(
        self,
        body: bytes | str,
        *,
        frame: bool,
        ring_size: int,
        limit: int,
        max_samples: int | None = None,
        native: bool = True,
    ) -> tuple[Any, EncodedBatch]:
        if native:
            scanned = self.scan(
                body,
                frame=frame,
                ring_size=ring_size,
                max_sample_bytes=limit,
                max_samples=max_samples,
            )
            if scanned is not None:
                return scanned
        if max_samples is not None:
            check_sample_count(body, max_samples, self._objects_per_sample)
        try:
            check_duplicate_keys(body)
            return self._decode_checked(body, frame=frame, ring_size=ring_size, limit=limit)
        except UnicodeDecodeError as exc:
            # msgspec checks UTF-8 in strings but lets a bad key through to
            # Python's codec; either way the body is not JSON (RFC 8259 §8.1).
            reason = exc.reason
            raise MalformedJSONError(f"invalid JSON: a string is not UTF-8 ({reason})") from None
        except RecursionError:
            # Valid JSON over our nesting limit: a limit, not malformed text
            # (as the duplicate-key scan's depth check says).
            raise SampleError("invalid JSON: nested too deeply", -1) from None

    def _decode_checked(
        self, body: bytes | str, *, frame: bool, ring_size: int, limit: int
    ) -> tuple[Any, EncodedBatch]:
        limit = min(limit, core.max_payload(ring_size))
        fast = self._fast
        if fast is not None and not self._maybe_mixed(body):
            dec = fast.decoders.frame if frame else fast.decoders.batch
            try:
                obj = dec.decode(body)
            except msgspec.DecodeError:
                pass  # the exact path reports it, with the first bad sample
            else:
                # Without the "data" key anywhere, no sample can be a raw one.
                raw = self.accepts_raw and (
                    '"data"' in body if isinstance(body, str) else b'"data"' in body
                )
                try:
                    return (obj.id if frame else None), fast.encode(
                        obj.samples, ring_size, limit, raw_possible=raw
                    )
                except Fallback:
                    pass
        return self._exact.decode(body, frame=frame, ring_size=ring_size, limit=limit)

    def _maybe_mixed(self, body: bytes | str) -> bool:
        """Could a data sample also name a member (e.g. ``"kind": 0``)?

        The fast decoder sees an absent field and ``0`` alike, so such bodies
        go to the exact path. Substring scans in C: ``"kind"`` can only be a key
        or inside a string value (base64 never holds quotes); a ``\\u`` escape
        could spell any key, so it counts as "maybe". Never a false negative.
        """
        if not self.accepts_raw:
            return False
        if isinstance(body, str):
            if "\\u" in body:
                return True
            return '"data"' in body and any(q in body for q in self._quoted_str)
        if b"\\u" in body:
            return True
        return b'"data"' in body and any(q in body for q in self._quoted)
