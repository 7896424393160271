"""Typed JSON -> ring records in one native pass, driven by a table the compiler emits.

The exact path (:mod:`ringbridge.schema.jsoncodec`: msgspec's typed decode,
then a pack per sample) costs ~1 µs a sample in Python. For sample types
made only of integers and bools at fixed offsets -- the default
``ringbridge_sample`` and most hand-written structs -- :func:`emit_table`
turns the compiled node tree into a table of members (name, offset, size,
signedness), and ``rb_json_scan`` (``bpf/jsonscan.c``, in
``libringbridge_validate.so``) walks the JSON bytes once and writes the
records straight into an output buffer.

Accept-only: the scanner takes a strict subset of what the exact path takes
(see the C file's comment) and gives up on anything else -- an unknown or
repeated key, a float, a ``"data"`` sample, an empty batch, a number out of
range -- and then the exact path runs, accepts or names the error with its
index and path. So errors are the exact path's, always; the property test
(tests/schema/test_jsonscan.py) holds the two paths to identical bytes
whenever the scanner accepts.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from ..core import ring as core
from ..nativelib import VALIDATE
from .batch import EncodedBatch
from .kinds.composite import CompositeNode
from .kinds.integer import BoolNode, IntNode

__all__ = ["BoundScan", "JsonScanner", "ScanResult", "emit_table"]

# rb_json_scan() verdicts.
_OK, _GIVE_UP, _NO_ROOM = 0, 1, 2
_UNSIGNED, _SIGNED, _BOOL = 0, 1, 2
#: The scanner tracks repeated members in a 64-bit mask.
MAX_FIELDS: Final = 64


class _Field(ctypes.Structure):
    _fields_ = [
        ("name_off", ctypes.c_uint32),
        ("name_len", ctypes.c_uint32),
        ("offset", ctypes.c_uint32),
        ("size", ctypes.c_uint8),
        ("kind", ctypes.c_uint8),
        ("_pad", ctypes.c_uint16),
    ]


class _Layout(ctypes.Structure):
    _fields_ = [
        ("fields", ctypes.POINTER(_Field)),
        ("names", ctypes.c_char_p),
        ("nfields", ctypes.c_uint32),
        ("sample_size", ctypes.c_uint32),
        ("record_size", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class _Result(ctypes.Structure):
    _fields_ = [
        ("count", ctypes.c_uint64),
        ("id_start", ctypes.c_uint64),
        ("id_end", ctypes.c_uint64),
        ("stop", ctypes.c_uint64),
    ]


# One pass over a body of at most max_batch_bytes, ~20 ns a sample: the GIL
# stays held (a release and retake would cost more than a small body's scan).
_SCAN = VALIDATE.function(
    "rb_json_scan",
    ctypes.c_int,
    ctypes.POINTER(_Layout),
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_int,
    ctypes.c_uint64,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.POINTER(_Result),
)


@dataclass(frozen=True)
class TableField:
    """One member as the scanner sees it."""

    name: str
    offset: int
    size: int
    kind: int  # 0 unsigned, 1 signed, 2 bool


def emit_table(node: CompositeNode) -> tuple[TableField, ...] | None:
    """The scanner's table of a sample type, or None when it has members the
    scanner does not take (anything but 1/2/4/8-byte integers and 1-byte bools
    at fixed offsets: enums, floats, arrays, nested structs, unions, bitfields)."""
    if node.kind != "struct" or not node.slots or len(node.slots) > MAX_FIELDS:
        return None
    out: list[TableField] = []
    for s in node.slots:
        n = s.node
        if s.groups or not s.name.isascii() or not s.name.isprintable():
            return None
        if type(n) is IntNode and n.size in (1, 2, 4, 8):
            out.append(TableField(s.name, s.offset, n.size, _SIGNED if n.signed else _UNSIGNED))
        elif type(n) is BoolNode and n.size == 1:
            out.append(TableField(s.name, s.offset, 1, _BOOL))
        else:
            return None
    return tuple(out)


@dataclass(frozen=True, slots=True)
class ScanResult:
    """An accepted body: ``count`` records in ``records``; a frame's id value."""

    records: bytes
    count: int
    id: Any


_ID: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


class JsonScanner:
    """The scanner of one sample type (build it with :meth:`for_node`)."""

    def __init__(self, table: tuple[TableField, ...], sample_size: int) -> None:
        self.table = table
        self.sample_size = sample_size
        self.record_size = core.record_size(sample_size)
        names = b"".join(f.name.encode() for f in table)
        fields = (_Field * len(table))()
        off = 0
        for i, f in enumerate(table):
            n = len(f.name.encode())
            fields[i] = _Field(off, n, f.offset, f.size, f.kind, 0)
            off += n
        self._names = names  # kept alive: the layout points into them
        self._fields = fields
        self._layout = _Layout(fields, names, len(table), sample_size, self.record_size, 0)
        self._layout_ref = ctypes.byref(self._layout)
        self._local = threading.local()

    @classmethod
    def for_node(cls, node: CompositeNode) -> JsonScanner | None:
        """The scanner of ``node``, or None (not a table layout, or the library
        is not built: said once, and the exact path serves)."""
        table = emit_table(node)
        if table is None:
            return None
        if _SCAN.find("the exact (msgspec) path for every typed JSON batch") is None:
            return None
        return cls(table, node.size)

    @staticmethod
    def frame_id(body: bytes | memoryview, result: _Result) -> Any:
        """The id of an accepted frame (None when it has none)."""
        if result.id_end <= result.id_start:
            return None
        return _ID.decode(body[result.id_start : result.id_end])

    def batch(
        self,
        body: bytes | str,
        *,
        frame: bool,
        ring_size: int,
        limit: int,
        max_samples: int | None,
    ) -> tuple[Any, EncodedBatch] | None:
        """(frame id, batch) of ``body`` under the exact path's limits (a sample
        larger than ``limit``, more than ``max_samples`` samples, more records
        than ``ring_size`` holds: the exact path names those), or None."""
        bound = self.bound(ring_size=ring_size, limit=limit, max_samples=max_samples)
        return None if bound is None else bound(body, frame)

    def bound(
        self,
        *,
        ring_size: int,
        limit: int,
        max_samples: int | None,
        max_batch_bytes: int | None = None,
    ) -> BoundScan | None:
        """:meth:`batch` with its limits worked out once, as one call (what a
        service whose limits are fixed keeps); None when no batch can pass them.
        ``max_batch_bytes``: the records' bytes are bounded by it too."""
        if self.sample_size > min(limit, core.max_payload(ring_size)):
            return None
        most = ring_size // self.record_size
        if max_samples is not None:
            most = min(most, max_samples)
        if most <= 0:
            return None
        room = most * self.record_size
        if max_batch_bytes is not None:
            room = min(room, max_batch_bytes)
        return BoundScan(self, most, room)

    def scan(self, body: bytes, *, frame: bool, max_samples: int, limit: int) -> ScanResult | None:
        """The records of ``body``, or None: the exact path must decide.

        ``limit`` bounds the records' bytes (the batch limit): beyond it the
        exact path names the error. Thread-safe: each thread scans into a
        buffer of its own, grown as needed up to ``limit``.
        """
        local = self._local
        buf: bytearray | None = getattr(local, "buf", None)
        if buf is None:
            buf = local.buf = bytearray(min(limit, 64 * 1024))
            local.addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        res = _Result()
        scan, layout, n = _SCAN.get(), self._layout_ref, len(body)
        while True:
            cap = min(len(buf), limit)
            verdict = scan(layout, body, n, frame, max_samples, local.addr, cap, ctypes.byref(res))
            if verdict != _NO_ROOM or len(buf) >= limit:
                break
            buf = local.buf = bytearray(min(limit, 2 * len(buf)))
            local.addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        if verdict != _OK:
            return None
        count = int(res.count)
        fid = self.frame_id(body, res) if frame else None
        with memoryview(buf) as view:
            records = view[: count * self.record_size].tobytes()
        return ScanResult(records, count, fid)


class BoundScan:
    """The scanner under fixed limits: ``(body, frame) -> (frame id, batch)`` or
    None (the exact path decides). Built by :meth:`JsonScanner.bound`; it is
    the typed JSON hot path, so nothing is worked out again per body."""

    __slots__ = ("most", "room", "scanner")

    def __init__(self, scanner: JsonScanner, most: int, room: int) -> None:
        self.scanner = scanner
        self.most = most  # samples
        self.room = room  # bytes of records

    def __call__(self, body: bytes | str, frame: bool) -> tuple[Any, EncodedBatch] | None:
        raw = body.encode() if isinstance(body, str) else body
        got = self.scanner.scan(raw, frame=frame, max_samples=self.most, limit=self.room)
        if got is None:
            return None
        n = got.count
        sc = self.scanner
        return got.id, EncodedBatch(got.records, n, n * sc.record_size, n * sc.sample_size)
