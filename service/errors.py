"""The one exception hierarchy of ringbridge, organised by cause.

Every error raised by the package derives from :class:`RingbridgeError`.
Classes are grouped by *what went wrong* -- the client's input, the client's
request, the service's capacity, the ring, the kernel, the pins, the
configuration, the client side -- and each server-side cause carries its
HTTP status hint and its ``code``, from which :mod:`ringbridge.wire` builds
the network contract's one table (code -> status, retry, close code).
Client-side errors have no status: no server answers with them. Errors from
lower layers (``OSError`` from libbpf or mmap, ``msgspec`` decode errors) are
translated once, at the module that talks to them, with ``raise ... from exc``.

A success with a caveat is not an error: a ``wait=consumed`` batch that was
committed but not consumed in time is an ``Ack`` with ``state="committed"``
(HTTP 202), returned like any other ack.

The tree (``(status)`` where a class sets its hint; a test checks that this
drawing is the code)::

    RingbridgeError                      (500) internal
    ├── ProtocolError                    (422) the input: ring record format (core, no I/O); .index
    │   ├── InvalidBatchError            bad record in a binary batch
    │   └── RecordTooLargeError          (413) can never fit the ring / a limit
    ├── SampleError                      (422) the input: bad sample in a JSON batch; .index, .path
    │   └── MalformedJSONError           the body or frame is not JSON at all
    ├── RequestError                     (400) the request itself, before its batch is looked at
    │   ├── UnauthorizedError            (401) no bearer token
    │   ├── ForbiddenError               (403) wrong bearer token
    │   ├── InvalidRequestError          (422) a bad query parameter or Idempotency-Key
    │   ├── KeyReusedError               (422) an Idempotency-Key sent with another body
    │   ├── NotFoundError                (404) no such route or event map
    │   ├── RequestTimeoutError          (408) body not received before the deadline
    │   ├── ClientGoneError              (499) the client left before the commit
    │   ├── PeerLimitError               (429) a peer's WebSocket connections at their limit
    │   └── UnsupportedMediaTypeError    (415) neither JSON nor octet-stream
    ├── UnavailableError                 (503) retry later (Retry-After): nothing was committed
    │   ├── OverloadedError              no admission credit: the byte budget is spent
    │   ├── StoppingError                the service is shutting down
    │   ├── KeyInFlightError             the batch of this Idempotency-Key is still in flight
    │   └── RingError                    the ring cannot take the batch now
    │       ├── RingFullError            WouldBlock: no space right now
    │       ├── RingTimeoutError         not committed by the batch's deadline
    │       └── RingClosedError          producer or ring closed (or crashed)
    ├── RingCorruptError                 the ring holds what the kernel rejects
    │   └── ForeignWriterError           another writer moved producer_pos or wrote a record
    ├── KernelError                      a bpf()/libbpf/mmap/epoll call failed; .op, .target, .errno
    │   └── BpfObjectError               open/load/find in a BPF object
    ├── PinError                         bpffs pin dir missing/foreign/mismatched; lock unusable
    │   └── ProducerLockedError          another producer holds the ring's lock
    ├── ConfigError                      invalid settings
    │   ├── MapTypeError                 the map is not a BPF_MAP_TYPE_USER_RINGBUF
    │   ├── SchemaError                  a BTF type that samples cannot be made of
    │   └── ListenError                  cannot listen on --host/--port
    └── ClientError                      (none) the client side (ringbridge.client, push, stats)
        ├── ServerUnreachableError       no connection to the server; nothing was sent
        ├── RejectedError                the server answered with an error; .status,
        │                                .code, .index, .retry_after, .retryable
        └── OutcomeUnknownError          the connection failed after the batch was sent,
                                         and resending it under its key did not tell
"""

from __future__ import annotations

import errno as _errno
import os
from typing import ClassVar


class RingbridgeError(Exception):
    """Base of every ringbridge error: something failed inside the service."""

    #: The HTTP status the server answers this cause with; None on the client side.
    status_hint: ClassVar[int | None] = 500
    #: The error's name on the wire (``{"error": {"code": ...}}``).
    code: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ProtocolError(RingbridgeError):
    """A record or batch does not follow the ring's record format.

    ``index`` is the first bad record (-1 when no record is to blame);
    ``reason`` is the message without the record's position.
    """

    status_hint = 422
    code = "invalid_batch"

    def __init__(self, message: str, index: int = -1) -> None:
        where = f"record {index}: " if index >= 0 else ""
        super().__init__(f"{where}{message}")
        self.index = index
        self.reason = message


class InvalidBatchError(ProtocolError):
    """A binary batch is malformed."""


class RecordTooLargeError(ProtocolError):
    """A record or batch can never be committed: larger than the ring or a limit."""

    status_hint = 413
    code = "too_large"


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


class RequestError(RingbridgeError):
    """The request is refused before its body is looked at."""

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
    """A query parameter is missing or not in its form (``wait``, ``timeout``, ``map``),
    or an ``Idempotency-Key`` header is not."""

    status_hint = 422
    code = "invalid_request"


class KeyReusedError(RequestError):
    """The ``Idempotency-Key`` names an earlier batch with another body: a client bug
    (a key must name one batch); nothing was committed."""

    status_hint = 422
    code = "key_reused"


class NotFoundError(RequestError):
    """What the request names does not exist: a route, or an event map (``?map=``)."""

    status_hint = 404
    code = "not_found"


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


class PeerLimitError(RequestError):
    """The peer holds as many WebSocket connections as one peer may (``ws_max_per_peer``):
    close one, or send more batches per connection."""

    status_hint = 429
    code = "too_many_connections"


class UnsupportedMediaTypeError(RequestError):
    """The body is neither JSON nor a binary batch."""

    status_hint = 415
    code = "unsupported_media_type"


class UnavailableError(RingbridgeError):
    """The service cannot take the batch now; nothing of it was committed: retry later.

    Catching this catches every "come back after ``Retry-After``" cause:
    capacity, lifecycle and the ring's.
    """

    status_hint = 503
    code = "unavailable"


class OverloadedError(UnavailableError):
    """No admission credit: batches in flight hold the whole byte budget.

    Raised before the body or frame is read, so refusing costs nothing.
    """

    code = "overloaded"


class StoppingError(UnavailableError):
    """The service is shutting down (or not running yet) and takes no new batches."""

    code = "stopping"


class KeyInFlightError(UnavailableError):
    """The batch of this ``Idempotency-Key`` is still being committed (sent earlier on
    a connection since lost): ask again after ``Retry-After``; the key keeps it from
    being committed twice."""

    code = "in_flight"


class RingError(UnavailableError):
    """The mapped ring cannot take the batch now."""


class RingFullError(RingError):
    """Not enough free space right now (the ``*_nowait`` WouldBlock)."""

    code = "ring_full"


class RingTimeoutError(RingError):
    """The batch was not committed by its deadline: the ring stayed full (for it
    or for the batches in line before it). Nothing of it was committed."""

    code = "ring_full_timeout"


class RingClosedError(RingError):
    """The producer or its ring was closed."""

    code = "closed"


class RingCorruptError(RingbridgeError):
    """The ring holds state the kernel would reject (found while recovering)."""

    code = "ring_corrupt"


class ForeignWriterError(RingCorruptError):
    """Another writer moved the ring's producer_pos or wrote a record this producer
    did not: the producer stopped committing (a user ring buffer takes one producer)."""

    code = "foreign_writer"


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
    """A bpffs pin directory cannot be used as asked (foreign, mismatched, missing),
    or the producer lock cannot be taken where it lives."""

    code = "pin"


class ProducerLockedError(PinError):
    """Another producer (a service or a library user) holds the ring's producer lock."""

    code = "producer_locked"


class ConfigError(RingbridgeError):
    """Settings are invalid or inconsistent."""

    code = "config"


class MapTypeError(ConfigError):
    """The map given as a user ring buffer is of another type (or not a BPF map)."""

    code = "map_type"


class SchemaError(ConfigError):
    """A BTF type cannot be used as the sample type (missing, or a member with no
    JSON form); the message names the type, the member path and why."""

    code = "schema"


class ListenError(ConfigError):
    """The listening socket cannot be bound (address in use, not local, privileged port)."""

    code = "listen"


class ClientError(RingbridgeError):
    """Raised by the client side: the server could not be reached or refused."""

    status_hint = None
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
    asks to come back (503 with ``Retry-After``); the client reads both from
    the wire contract (:mod:`ringbridge.wire`).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        index: int | None = None,
        retry_after: float | None = None,
        retryable: bool = False,
        batch: object = None,
    ) -> None:
        where = f"batch {batch!r}: " if batch is not None else ""
        super().__init__(f"{where}HTTP {status} {code}: {message}")
        self.status = status
        self.code = code  # the server's code, not this class's
        self.reason = message
        self.index = index
        self.retry_after = retry_after
        self.retryable = retryable
        self.batch = batch


class OutcomeUnknownError(ClientError):
    """The batch was sent but no answer came, and resending it under its
    ``Idempotency-Key`` did not get one either: it may be committed.

    ``key`` is that key (None for a stream's batch): sending the batch again
    under it is answered with its first ack if it was committed.
    """

    code = "outcome_unknown"

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
