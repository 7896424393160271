"""The one exception hierarchy of ringbridge, organised by cause.

Every error raised by the package derives from :class:`RingbridgeError`.
Classes are grouped by *what went wrong* -- the client's input, the client's
request, the service's capacity, the ring, the kernel, the configuration --
and each carries an HTTP status hint, so the API layer maps errors to
responses without knowing where they came from. Errors from lower layers
(``OSError`` from libbpf or mmap, ``msgspec`` decode errors) are translated
once, at the module that talks to them, with ``raise ... from exc``.

A success with a caveat is not an error: a ``wait=consumed`` batch that was
committed but not consumed in time is an ``Ack`` with ``state="committed"``
(HTTP 202), returned like any other ack::

    RingbridgeError                      (500)
    ├── ProtocolError                    the input: ring record format (core, no I/O)
    │   ├── InvalidBatchError            (422) bad record in a batch; .index
    │   └── RecordTooLargeError          (413) can never fit the ring / a limit
    ├── SampleError                      (422) the input: bad sample in a JSON batch; .index, .path
    │   └── MalformedJSONError           (422) the body or frame is not JSON at all
    ├── RequestError                     the request itself, before its batch is looked at
    │   ├── UnauthorizedError            (401) no bearer token
    │   ├── ForbiddenError               (403) wrong bearer token
    │   ├── RequestTimeoutError          (408) body not received before the deadline
    │   ├── UnsupportedMediaTypeError    (415) neither JSON nor octet-stream
    │   └── ClientGoneError              (499) the client left before the commit
    ├── ServiceError                     capacity and lifecycle: retry later (503 + Retry-After)
    │   ├── OverloadedError              no admission credit: the byte budget is spent
    │   └── StoppingError                the service is shutting down
    ├── RingError                        state of the mapped ring
    │   ├── RingFullError                (503) WouldBlock: no space right now
    │   ├── RingTimeoutError             (503) not committed by the batch's deadline
    │   ├── RingClosedError              (503) producer or ring closed (or crashed)
    │   └── RingCorruptError             (500) ring holds what the kernel rejects
    ├── KernelError                      (500) a bpf()/libbpf/mmap/epoll call failed;
    │   │                                      .op, .target, .errno
    │   ├── BpfObjectError               open/load/find in a BPF object
    │   └── PinError                     bpffs pin dir missing/foreign/mismatched
    │       └── ProducerLockedError      another producer holds the pin dir's lock
    ├── ConfigError                      (500) invalid settings
    │   ├── SchemaError                  a BTF type that samples cannot be made of
    │   └── ListenError                  cannot listen on --host/--port
    └── ClientError                      the client side (ringbridge.client, push, stats)
        ├── ServerUnreachableError       no connection to the server; nothing was sent
        ├── RejectedError                the server answered with an error; .status,
        │                                .code, .index, .retry_after, .retryable
        └── OutcomeUnknownError          the connection failed after the batch was sent:
                                         it may have been committed; not retried
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
    """A JSON sample failed validation; ``index`` is its position in the batch.

    ``path`` names the value at fault in the request's own terms
    (``samples[3].hdr.ops[2]``) when it is known; the message then starts with it.
    """

    status_hint = 422
    code = "invalid_sample"

    def __init__(self, message: str, index: int = -1, path: str | None = None) -> None:
        where = f"{path}: " if path else f"sample {index}: " if index >= 0 else ""
        super().__init__(f"{where}{message}")
        self.index = index
        self.path = path
        self.reason = message


class MalformedJSONError(SampleError):
    """The body or text frame is not JSON (syntax, UTF-8, nesting): no sample to blame."""

    code = "malformed_json"


class RingError(RingbridgeError):
    """The mapped ring cannot take the operation now."""


class RingFullError(RingError):
    """Not enough free space right now (the ``*_nowait`` WouldBlock)."""

    status_hint = 503
    code = "ring_full"


class RingTimeoutError(RingError):
    """The batch was not committed by its deadline: the ring stayed full (for it
    or for the batches in line before it). Nothing of it was committed."""

    status_hint = 503
    code = "ring_full_timeout"


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


class ProducerLockedError(PinError):
    """Another producer (a running service) holds the pin dir's producer lock."""

    code = "producer_locked"


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


class InvalidRequestError(RequestError):
    """A query parameter is missing its form (``wait``, ``timeout``)."""

    status_hint = 422
    code = "invalid_request"


class RequestTimeoutError(RequestError):
    """The body did not arrive before the batch's deadline (a slow or stalled client)."""

    status_hint = 408
    code = "request_timeout"


class ClientGoneError(RequestError):
    """The client disconnected before its batch was committed; nothing was committed.

    Nobody receives the answer; the status is nginx's "client closed request".
    """

    status_hint = 499
    code = "client_gone"


class UnsupportedMediaTypeError(RequestError):
    """The body is neither JSON nor a binary batch."""

    status_hint = 415
    code = "unsupported_media_type"


class ConfigError(RingbridgeError):
    """Settings are invalid or inconsistent."""

    code = "config"


class SchemaError(ConfigError):
    """A BTF type cannot be used as the sample type (missing, or a member with no
    JSON form); the message names the type, the member path and why."""

    code = "schema"


class ListenError(ConfigError):
    """The listening socket cannot be bound (address in use, not local, privileged port)."""

    code = "listen"


class ServiceError(RingbridgeError):
    """The service cannot take the batch now (capacity or lifecycle); retry later."""

    status_hint = 503
    code = "unavailable"


class OverloadedError(ServiceError):
    """No admission credit: batches in flight hold the whole byte budget.

    Raised before the body or frame is read, so refusing costs nothing.
    """

    code = "overloaded"


class StoppingError(ServiceError):
    """The service is shutting down and takes no new batches."""

    code = "stopping"


class ClientError(RingbridgeError):
    """Raised by the client side: the server could not be reached or refused."""

    code = "client"


class ServerUnreachableError(ClientError):
    """No connection to the server (refused, DNS, TLS, timeout): nothing was sent."""

    code = "unreachable"

    def __init__(self, url: str, reason: str, hint: str = "") -> None:
        super().__init__(f"cannot connect to {url}: {reason}{f' ({hint})' if hint else ''}")
        self.url = url
        self.reason = reason


class RejectedError(ClientError):
    """The server answered a request, batch or handshake with an error.

    ``status`` is the HTTP status (for a WebSocket error ack, the status the
    same error gets over HTTP: 422, 413, 503...). ``retryable`` is true only
    when the server guarantees that nothing of the batch was committed and
    asks to come back (503 with ``Retry-After``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        index: int | None = None,
        retry_after: float | None = None,
        batch: object = None,
    ) -> None:
        where = f"batch {batch!r}: " if batch is not None else ""
        super().__init__(f"{where}HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.reason = message
        self.index = index
        self.retry_after = retry_after
        self.batch = batch

    @property
    def retryable(self) -> bool:
        return self.status == 503


class OutcomeUnknownError(ClientError):
    """The batch was sent but no answer came: it may be committed. Not retried."""

    code = "outcome_unknown"
