"""The one exception hierarchy of ringbridge.

Every error raised by the package derives from :class:`RingbridgeError` and
carries an HTTP status hint, so the API layer maps errors to responses without
knowing where they came from. Errors from lower layers (``OSError`` from
libbpf or mmap, ``msgspec`` decode errors) are translated once, at the module
that talks to them, with ``raise ... from exc``::

    RingbridgeError                      (500)
    ├── ProtocolError                    ring record format (core, no I/O)
    │   ├── InvalidBatchError            (422) bad record in a batch; .index
    │   └── RecordTooLargeError          (413) can never fit the ring / limit
    ├── SampleError                      (422) bad sample in a JSON batch; .index
    ├── RingError                        state of the mapped ring
    │   ├── RingFullError                (503) WouldBlock: no space right now
    │   ├── RingTimeoutError             (503) still full when the wait timed out
    │   │   └── ConsumeTimeoutError      committed, not consumed in time; .ack
    │   ├── RingClosedError              (503) producer or ring closed
    │   └── RingCorruptError             (500) ring holds what the kernel rejects
    ├── KernelError                      (500) a bpf()/libbpf/mmap/epoll call failed;
    │   │                                      .op, .target, .errno
    │   ├── BpfObjectError               open/load/find in a BPF object
    │   └── PinError                     bpffs pin dir missing/foreign/mismatched
    ├── RequestError                     the HTTP request itself is refused
    │   ├── UnauthorizedError            (401) no bearer token
    │   ├── ForbiddenError               (403) wrong bearer token
    │   └── UnsupportedMediaTypeError    (415) neither JSON nor octet-stream
    ├── ConfigError                      (500) invalid settings
    └── ServiceError
        ├── QueueFullError               (503) batch queue over its byte limit
        └── StoppingError                (503) service is shutting down
"""

from __future__ import annotations

import errno as _errno
import os


class RingbridgeError(Exception):
    """Base of every ringbridge error. ``status_hint`` is the HTTP status."""

    status_hint: int = 500
    code: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProtocolError(RingbridgeError):
    """A record or batch does not follow the ring's record format."""

    status_hint = 422
    code = "invalid_batch"


class InvalidBatchError(ProtocolError):
    """A binary batch is malformed; ``index`` is the first bad record (or -1)."""

    def __init__(self, message: str, index: int = -1) -> None:
        where = f"record {index}: " if index >= 0 else ""
        super().__init__(f"{where}{message}")
        self.index = index
        self.reason = message


class RecordTooLargeError(ProtocolError):
    """A record or batch can never be committed: larger than the ring or a limit."""

    status_hint = 413
    code = "too_large"

    def __init__(self, message: str, index: int = -1) -> None:
        where = f"record {index}: " if index >= 0 else ""
        super().__init__(f"{where}{message}")
        self.index = index
        self.reason = message


class SampleError(RingbridgeError):
    """A JSON sample failed validation; ``index`` is its position in the batch."""

    status_hint = 422
    code = "invalid_sample"

    def __init__(self, message: str, index: int = -1) -> None:
        where = f"sample {index}: " if index >= 0 else ""
        super().__init__(f"{where}{message}")
        self.index = index
        self.reason = message


class RingError(RingbridgeError):
    """The mapped ring cannot take the operation now."""


class RingFullError(RingError):
    """Not enough free space right now (the ``*_nowait`` WouldBlock)."""

    status_hint = 503
    code = "ring_full"


class RingTimeoutError(RingError):
    """The ring stayed full until the wait's deadline."""

    status_hint = 503
    code = "ring_full_timeout"


class ConsumeTimeoutError(RingTimeoutError):
    """``wait=consumed`` timed out: the batch *is* committed (``.ack``), not consumed.

    The API answers 202 with the ack, not a 5xx: a client retrying a 5xx
    would commit the batch twice.
    """

    code = "consume_timeout"

    def __init__(self, message: str, ack: object) -> None:
        super().__init__(message)
        self.ack = ack


class RingClosedError(RingError):
    """The producer or its ring was closed."""

    status_hint = 503
    code = "closed"


class RingCorruptError(RingError):
    """The ring holds state the kernel would reject (found while recovering)."""

    code = "ring_corrupt"


class KernelError(RingbridgeError):
    """A call into the kernel or libbpf failed.

    The message names the subsystem, what failed, on which object, and the
    errno text, in the style of libbpf's own messages.
    """

    code = "kernel"

    def __init__(self, op: str, target: str, err: int, detail: str = "") -> None:
        err = abs(err)
        name = _errno.errorcode.get(err, f"errno {err}")
        text = os.strerror(err) if err else "unknown error"
        extra = f"; {detail}" if detail else ""
        super().__init__(f"{op} {target!r} failed: {name} ({text}){extra}")
        self.op = op
        self.target = target
        self.errno = err


class BpfObjectError(KernelError):
    """Opening, loading or looking into a BPF object failed."""


class PinError(RingbridgeError):
    """A bpffs pin directory cannot be used as asked (foreign, mismatched, missing)."""

    code = "pin"


class RequestError(RingbridgeError):
    """The HTTP request is refused before its body is looked at."""

    status_hint = 400
    code = "bad_request"


class UnauthorizedError(RequestError):
    """No usable credentials."""

    status_hint = 401
    code = "unauthorized"


class ForbiddenError(RequestError):
    """Credentials given but wrong."""

    status_hint = 403
    code = "forbidden"


class UnsupportedMediaTypeError(RequestError):
    """The body is neither JSON nor a binary batch."""

    status_hint = 415
    code = "unsupported_media_type"


class ConfigError(RingbridgeError):
    """Settings are invalid or inconsistent."""

    code = "config"


class ServiceError(RingbridgeError):
    """The service cannot take the batch now."""

    status_hint = 503
    code = "unavailable"


class QueueFullError(ServiceError):
    """The producer's batch queue is over its byte limit."""

    code = "queue_full"


class StoppingError(ServiceError):
    """The service is shutting down and takes no new batches."""

    code = "stopping"
