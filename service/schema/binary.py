"""Binary (``application/octet-stream``) batches: checked as they are, copied as they are.

A body already in the ring's record format (``u32 len; u32 0; payload; zero
pad to 8``) is validated as a whole without per-sample Python objects. The
pure Python reference, :func:`ringbridge.core.ring.validate_batch`, takes
~0.85 ms for 64 KiB of 16-byte samples (~2,700 records); ``bpf/validate.c``
(``build/libringbridge_validate.so``, called through ctypes) takes
microseconds. The reference stays the authority: a rejection is re-run
through it for the exact error, and a hypothesis test checks that both agree.
Binary batches need no sample type: they work with or without one.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from ..core import ring as core
from ..errors import InvalidBatchError, ProtocolError
from ..nativelib import VALIDATE
from .batch import EncodedBatch

__all__ = [
    "SCAN_FRAMES",
    "InPlace",
    "NativeVerdict",
    "WsFrame",
    "native_verdict",
    "validate_binary_batch",
    "validate_binary_batch_reference",
]


class _Result(ctypes.Structure):
    _fields_ = [
        ("count", ctypes.c_uint64),
        ("payload_bytes", ctypes.c_uint64),
        ("index", ctypes.c_int64),
        ("word", ctypes.c_uint32),
        ("_reserved", ctypes.c_uint32),
    ]


# A scan of the whole body (up to max_batch_bytes): the GIL is released.
_VALIDATE_BATCH = VALIDATE.function(
    "rb_validate_batch",
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.c_uint64,
    ctypes.c_uint64,
    ctypes.POINTER(_Result),
    releases_gil=True,
)


def _native() -> Callable[..., Any] | None:
    """The C validator, or None (said once) when it is not built."""
    fn: Callable[..., Any] | None = _VALIDATE_BATCH.find(
        "the pure Python validator (~0.85 ms per 64 KiB batch)"
    )
    return fn


def validate_binary_batch_reference(
    body: bytes | bytearray | memoryview, *, ring_size: int, max_sample_bytes: int
) -> EncodedBatch:
    """The pure Python path (core.validate_batch): the specification."""
    limit = min(max_sample_bytes, core.MAX_SAMPLE_LEN)
    info = core.validate_batch(body, ring_size, limit)
    records = body if isinstance(body, bytes) else bytes(body)
    return EncodedBatch(records, info.count, info.nbytes, info.payload_bytes)


@dataclass(frozen=True)
class NativeVerdict:
    """What ``rb_validate_batch`` decided: 0 = valid; else the first bad record."""

    verdict: int
    count: int
    payload_bytes: int
    index: int


def native_verdict(records: bytes, *, ring_size: int, max_sample_bytes: int) -> NativeVerdict:
    """Runs only the C validator (tests compare it with the reference); ConfigError
    if it is not built."""
    return _verdict(_VALIDATE_BATCH.get(), records, ring_size, max_sample_bytes)


def _verdict(
    fn: Callable[..., Any], records: bytes, ring_size: int, max_sample_bytes: int
) -> NativeVerdict:
    res = _Result()
    limit = min(max_sample_bytes, core.MAX_SAMPLE_LEN)
    verdict = fn(records, len(records), ring_size, max(limit, 0), ctypes.byref(res))
    return NativeVerdict(int(verdict), int(res.count), int(res.payload_bytes), int(res.index))


def validate_binary_batch(
    body: bytes | bytearray | memoryview, *, ring_size: int, max_sample_bytes: int
) -> EncodedBatch:
    """A body already in record format, checked as a whole (nothing of a bad batch is queued).

    Raises InvalidBatchError (422) or RecordTooLargeError (413) naming the
    first bad record; what it returns is copied into the ring byte for byte.
    """
    native = _native()
    if native is None:
        return validate_binary_batch_reference(
            body, ring_size=ring_size, max_sample_bytes=max_sample_bytes
        )
    # bytes go to C without a copy (ctypes passes the object's buffer).
    records = body if isinstance(body, bytes) else bytes(body)
    v = _verdict(native, records, ring_size, max_sample_bytes)
    if v.verdict == 0:
        return EncodedBatch(records, v.count, len(records), v.payload_bytes)
    # Rejected: the reference raises the exact error (type, index, message).
    validate_binary_batch_reference(records, ring_size=ring_size, max_sample_bytes=max_sample_bytes)
    # Disagreement is a bug in validate.c; refuse rather than risk the ring.
    raise InvalidBatchError(
        f"native validator rejected the batch (verdict {v.verdict}) but the reference "
        f"accepts it; this is a bug in {VALIDATE.path}",
        v.index,
    )


# -- in place (the data plane): the records are already where they will be read -----

# Both run over at most one body or frame, in memory the caller owns (ring
# space claimed and not yet published): the GIL stays held -- a release and
# retake costs more than validating a 64 KiB batch.
_VALIDATE_AT = VALIDATE.function(
    "rb_validate_batch",
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_uint64,
    ctypes.c_uint64,
    ctypes.POINTER(_Result),
)
_UNMASK_VALIDATE_AT = VALIDATE.function(
    "rb_ws_unmask_validate",
    ctypes.c_int,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_uint32,
    ctypes.c_uint64,
    ctypes.c_uint64,
    ctypes.POINTER(_Result),
)


class WsFrame(ctypes.Structure):
    """One frame :meth:`InPlace.scan` took (``struct rb_ws_frame``)."""

    _fields_ = [
        ("offset", ctypes.c_uint64),
        ("length", ctypes.c_uint64),
        ("key", ctypes.c_uint32),
        ("verdict", ctypes.c_int32),
        ("result", _Result),
    ]


#: The most frames one :meth:`InPlace.scan` takes.
SCAN_FRAMES: Final = 64

_SCAN_AT = VALIDATE.function(
    "rb_ws_scan",
    ctypes.c_size_t,
    ctypes.c_void_p,
    ctypes.c_size_t,
    ctypes.c_uint64,
    ctypes.c_uint64,
    ctypes.c_uint64,
    ctypes.POINTER(WsFrame),
    ctypes.c_size_t,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ctypes.c_uint64),
)
_UNMASK_AT = VALIDATE.function(
    "rb_ws_unmask", None, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32, ctypes.c_uint32
)


class InPlace:
    """Validation of a batch where it lies, by address: a body received into
    ring space, a WebSocket frame unmasked there first. One instance per
    caller (it reuses its result struct); ConfigError when the library is
    not built (the data plane needs it)."""

    def __init__(self, ring_size: int, max_sample_bytes: int) -> None:
        self._validate = _VALIDATE_AT.get()
        self._unmask_validate = _UNMASK_VALIDATE_AT.get()
        self._unmask = _UNMASK_AT.get()
        self._ring_size = ring_size
        self._limit = max(0, min(max_sample_bytes, core.MAX_SAMPLE_LEN))
        self._res = _Result()
        self._ref = ctypes.byref(self._res)
        self._scan = _SCAN_AT.get()
        self.frames = (WsFrame * SCAN_FRAMES)()
        self._stop = ctypes.c_uint64()
        self._next = ctypes.c_uint64()
        self._scan_refs = (self.frames, ctypes.byref(self._stop), ctypes.byref(self._next))

    def validate(self, address: int, nbytes: int) -> tuple[int, int] | None:
        """(count, payload bytes) of the valid batch at ``address``, or None."""
        if self._validate(address, nbytes, self._ring_size, self._limit, self._ref):
            return None
        return int(self._res.count), int(self._res.payload_bytes)

    def unmask_validate(self, address: int, nbytes: int, key: int) -> tuple[int, int] | None:
        """Unmask the frame payload at ``address`` with ``key`` (its 4 bytes read
        little-endian), then :meth:`validate` it."""
        if self._unmask_validate(address, nbytes, key, self._ring_size, self._limit, self._ref):
            return None
        return int(self._res.count), int(self._res.payload_bytes)

    def scan(self, address: int, nbytes: int, max_payload: int, cap: int) -> tuple[int, int, int]:
        """Whole WebSocket frames of the one 8-aligned shape at ``address``
        (``nbytes`` there), at most ``cap``, unmasked and validated in place,
        each valid one's header made an empty DISCARD record (``rb_ws_scan``):
        (frames taken, in :attr:`frames`; where the first not taken starts;
        its whole size when it may be taken once it is all there, 0 when it
        may not, 8 while its header is incomplete)."""
        frames, stop, nxt = self._scan_refs
        k = self._scan(
            address,
            nbytes,
            max_payload,
            self._ring_size,
            self._limit,
            frames,
            min(cap, SCAN_FRAMES),
            stop,
            nxt,
        )
        return int(k), int(self._stop.value), int(self._next.value)

    def unmask(self, address: int, nbytes: int, key: int, phase: int = 0) -> None:
        """Unmask ``nbytes`` at ``address``; byte 0 takes key byte ``phase``."""
        self._unmask(address, nbytes, key, phase)

    def unmask_buffer(self, buf: bytearray, key: int) -> None:
        """Unmask a whole frame payload held in ``buf``."""
        if buf:
            self._unmask(ctypes.addressof(ctypes.c_char.from_buffer(buf)), len(buf), key, 0)

    def refusal(self, records: bytes | bytearray | memoryview) -> ProtocolError:
        """The exact error of a batch :meth:`validate` refused (the reference's)."""
        try:
            validate_binary_batch_reference(
                records, ring_size=self._ring_size, max_sample_bytes=self._limit
            )
        except ProtocolError as exc:
            return exc
        # Disagreement is a bug in validate.c; refuse rather than risk the ring.
        return InvalidBatchError(
            f"native validator rejected the batch but the reference accepts it; "
            f"this is a bug in {VALIDATE.path}"
        )
