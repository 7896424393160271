"""The network contract, written once: what HTTP and the WebSocket carry.

Both ends use this module -- the server (:mod:`ringbridge.api`), the client
(:mod:`ringbridge.client`) -- and the producer takes :class:`Ack` and
:data:`WaitFor` from it. It imports nothing of ringbridge but
:mod:`ringbridge.errors`, so every layer may use it.

- **The query** of ``POST /v1/samples`` and of the ``WS /v1/stream``
  handshake: ``wait=committed|consumed`` and ``timeout=<seconds>``, a finite
  number greater than 0. One parser (:func:`parse_query`), one refusal:
  :class:`~ringbridge.errors.InvalidRequestError` (422 ``invalid_request``),
  over HTTP and at the handshake alike.
- **The ack** (:class:`Ack`): ``{"accepted", "first_seq", "last_seq",
  "state"}``, led by the frame's ``"id"`` on the WebSocket; HTTP 200, or 202
  when ``wait=consumed`` ran out with the batch only committed (never resend
  it).
- **The error** (:class:`ErrorInfo`): ``{"error": {"code", "message",
  "index"}}``, or ``{"id", "error": {...}}`` on the WebSocket.
- **The idempotency key** of ``POST /v1/samples`` (:data:`IDEMPOTENCY_KEY`,
  :func:`parse_idempotency_key`): a batch sent again under its key, while
  among the last ``idempotency_keys`` keyed batches committed (kept with the
  pins), gets the first ack and :data:`REPLAYED`, and is not committed again;
  a resend while the first is in flight waits for it (503 ``in_flight`` at
  its own timeout); another body under the key is 422 ``key_reused``.
- **The rules** (:data:`RULES`), per error code: the HTTP status, whether
  the batch may be sent again (503 + ``Retry-After``: the server committed
  nothing of it) and the close code of a stream that ends for that cause.
  They are read off the error classes (each cause's ``code`` and
  ``status_hint``; "retry" is :class:`~ringbridge.errors.UnavailableError`
  and its subclasses), so a new cause cannot be missing from the table.
- **Events** (``GET /v1/events?map=NAME[&format=binary]``, WebSocket or
  Server-Sent Events): the query (:func:`parse_events_query`), an event as
  JSON (``{"seq", "value"}`` typed, ``{"seq", "data"}`` base64 untyped), the
  gap marker ``{"lost", "first_seq", "last_seq"}``, a binary event frame
  (:func:`binary_event`: u64 LE seq, then the record) and an SSE message
  (:func:`sse_message`).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import parse_qsl

import msgspec

from .errors import (
    ClientError,
    InvalidRequestError,
    ProtocolError,
    RingbridgeError,
    SampleError,
    StoppingError,
    UnavailableError,
)

#: How long the server waits before it answers: until the batch is in the
#: ring, or until the kernel's consumer has passed it.
WaitFor = Literal["committed", "consumed"]
WAITS: Final[tuple[WaitFor, ...]] = ("committed", "consumed")

#: The header naming a batch for resends; the answer's, saying the ack is its first.
IDEMPOTENCY_KEY: Final = "Idempotency-Key"
REPLAYED: Final = "Idempotent-Replayed"
MAX_KEY_LENGTH: Final = 255

#: WebSocket close codes (RFC 6455 section 7.4.1 and the IANA registry).
CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY: Final = 1008
CLOSE_INTERNAL: Final = 1011
CLOSE_RESTART: Final = 1012
CLOSE_TRY_AGAIN: Final = 1013

_encode = msgspec.json.Encoder().encode


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """A committed batch: its samples are ``first_seq..last_seq`` of the service.

    ``state`` is what is known of the batch when the ack is given: always at
    least ``"committed"`` (in the ring); ``"consumed"`` once the kernel's
    consumer passed it. A ``wait="consumed"`` whose wait ran out answers
    ``"committed"``: a success with a caveat (do not resend), not an error.
    """

    accepted: int
    first_seq: int
    last_seq: int
    state: WaitFor = "committed"
    #: The batch's id on a WebSocket stream (a binary frame's is its 0-based
    #: frame number); None over HTTP.
    id: Any = None
    #: Where the batch lies in the ring, ``[start, end)``: known to the server
    #: that committed it (to wait for its consumption), never sent; -1 elsewhere.
    ring_start_pos: int = -1
    ring_end_pos: int = -1

    @property
    def consumed(self) -> bool:
        return self.state == "consumed"


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """An error answer: ``index`` is the first bad sample or record, or None."""

    code: str
    message: str
    index: int | None = None

    @classmethod
    def of(cls, exc: RingbridgeError) -> ErrorInfo:
        index = exc.index if isinstance(exc, ProtocolError | SampleError) else -1
        return cls(exc.code, exc.message, index if index >= 0 else None)


@dataclass(frozen=True, slots=True)
class Rule:
    """What an error code means on the wire."""

    status: int
    #: Nothing of the batch was committed and the server asks to come back
    #: after ``Retry-After``: sending it again is safe.
    retry: bool
    #: The close code of a WebSocket stream that ends for this cause.
    close: int
    #: The cause, in a sentence (the error class's docstring), for the API docs.
    doc: str


def _rules() -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    line: list[type[RingbridgeError]] = [RingbridgeError]
    # Breadth first: a code is documented by the most general class that has it.
    while line:
        cls = line.pop(0)
        line.extend(cls.__subclasses__())
        status = cls.status_hint
        if status is None or cls.code in rules:
            continue  # client-side causes have no status; subclasses may share a code
        retry = issubclass(cls, UnavailableError)
        if issubclass(cls, StoppingError):
            close = CLOSE_RESTART
        elif retry:
            close = CLOSE_TRY_AGAIN
        else:
            close = CLOSE_INTERNAL if status >= 500 else CLOSE_POLICY
        summary = (cls.__doc__ or cls.__name__).strip().split("\n\n", 1)[0]
        doc = " ".join(summary.split()).replace("``", "`")
        rules[cls.code] = Rule(status, retry, close, doc)
    return rules


#: Every server-side error code and its rule.
RULES: Final[dict[str, Rule]] = _rules()


def rule(code: str) -> Rule:
    """The rule of ``code``; an unknown code is an internal error (500)."""
    return RULES.get(code) or RULES[RingbridgeError.code]


def retryable(code: str, status: int) -> bool:
    """Whether a batch refused with ``code`` and ``status`` may be sent again.

    An answer that is not ours (a proxy's, with no known code) follows HTTP:
    503 is "come back later".
    """
    known = RULES.get(code)
    return known.retry if known is not None else status == 503


def error_headers(code: str, retry_after: int) -> dict[str, str]:
    """The headers of an HTTP error answer (or of a refused handshake) for ``code``."""
    r = rule(code)
    headers: dict[str, str] = {}
    if r.retry:
        headers["Retry-After"] = str(retry_after)
    if r.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="ringbridge"'
    return headers


def retry_after_seconds(header: str | None) -> float | None:
    """A ``Retry-After`` header's seconds (None when absent or not a number)."""
    if header is None:
        return None
    try:
        return float(header)
    except ValueError:
        return None


# -- the query ------------------------------------------------------------------------


def parse_query(query: bytes | str) -> tuple[WaitFor, float | None]:
    """``wait`` and ``timeout`` of a query string (None: no timeout given).

    Refuses, with :class:`InvalidRequestError`, a ``wait`` other than
    ``committed``/``consumed`` and a ``timeout`` that is not a finite number
    greater than 0 (``0``, ``-1``, ``inf``, ``nan``, ``abc``). Other keys are
    ignored; of a repeated key the last counts.
    """
    wait: WaitFor = "committed"
    timeout: float | None = None
    if not query:
        return wait, timeout
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key == "wait":
            if value == "committed":
                wait = "committed"
            elif value == "consumed":
                wait = "consumed"
            else:
                raise InvalidRequestError(
                    f"query.wait: Input should be 'committed' or 'consumed', got {value!r}"
                )
        elif key == "timeout":
            try:
                t = float(value)
            except ValueError:
                raise InvalidRequestError(
                    f"query.timeout: Input should be a valid number, got {value!r}"
                ) from None
            if not t > 0 or not math.isfinite(t):
                raise InvalidRequestError(
                    f"query.timeout: Input should be a finite number greater than 0, got {value!r}"
                )
            timeout = t
    return wait, timeout


def parse_idempotency_key(value: str | None) -> str | None:
    """The ``Idempotency-Key`` header's key (None when absent); InvalidRequestError
    unless it is 1 to 255 visible ASCII characters."""
    if value is not None and not (
        0 < len(value) <= MAX_KEY_LENGTH and all("!" <= ch <= "~" for ch in value)
    ):
        raise InvalidRequestError(
            f"{IDEMPOTENCY_KEY}: expected 1 to {MAX_KEY_LENGTH} visible ASCII characters, "
            f"got {value[:40]!r}{'...' if len(value) > 40 else ''}"
        )
    return value


def query_params(wait: WaitFor, timeout: float | None) -> dict[str, str]:
    """The query a client sends for ``wait`` and ``timeout`` (None: the server's default)."""
    params: dict[str, str] = {"wait": wait}
    if timeout is not None:
        params["timeout"] = repr(float(timeout))
    return params


# -- answers, as the server writes them -----------------------------------------------


def ack_status(ack: Ack, wait: WaitFor) -> int:
    """200, or 202 when ``wait=consumed`` ran out with the batch only committed."""
    return 202 if ack.state != wait else 200


def ack_json(ack: Ack) -> bytes:
    """``{"accepted", "first_seq", "last_seq", "state"}``, without a JSON encoder."""
    return b'{"accepted":%d,"first_seq":%d,"last_seq":%d,"state":"%s"}' % (
        ack.accepted,
        ack.first_seq,
        ack.last_seq,
        ack.state.encode(),
    )


def frame_ack_json(frame_id: Any, ack: Ack) -> bytes:
    """The WebSocket ack: ``{"id", "accepted", "first_seq", "last_seq", "state"}``."""
    return b'{"id":' + _encode(frame_id) + b"," + ack_json(ack)[1:]


def error_json(err: ErrorInfo) -> bytes:
    """``{"error": {"code", "message", "index"}}``."""
    return _encode({"error": err})


def frame_error_json(frame_id: Any, err: ErrorInfo) -> bytes:
    """The WebSocket error ack: ``{"id", "error": {"code", "message", "index"}}``."""
    return _encode({"id": frame_id, "error": err})


# -- answers, as the client reads them ------------------------------------------------


def _json(raw: bytes | str) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None


def read_ack(body: Any, frame_id: Any = None) -> Ack:
    """The :class:`Ack` of a decoded ack body; ClientError when it is not one."""
    try:
        state = body.get("state", "committed")
        if state not in WAITS:
            raise ValueError(f"state {state!r}")
        return Ack(
            accepted=int(body["accepted"]),
            first_seq=int(body["first_seq"]),
            last_seq=int(body["last_seq"]),
            state=state,
            id=frame_id,
        )
    except (AttributeError, KeyError, TypeError, ValueError):
        raise ClientError(f"the server's answer is not an ack: {body!r:.200}") from None


def _error_info(err: dict[str, Any]) -> ErrorInfo:
    index = err.get("index")
    return ErrorInfo(
        str(err.get("code", "error")),
        str(err.get("message", "")),
        index if isinstance(index, int) else None,
    )


def read_error(raw: bytes | str) -> ErrorInfo:
    """The error of an HTTP error answer, ours (``{"error": ...}``) or anyone's."""
    body = _json(raw)
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return _error_info(err)
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    return ErrorInfo("http_error", text.strip()[:300] or "(no body)")


def read_frame_answer(raw: bytes | str) -> tuple[Any, Ack | ErrorInfo]:
    """(id, ack or error) of one WebSocket answer frame; ClientError when it is neither."""
    body = _json(raw)
    if not isinstance(body, dict) or "id" not in body:
        raise ClientError(f"the server's WebSocket answer is not an ack: {raw!r:.200}")
    frame_id = body["id"]
    err = body.get("error")
    if isinstance(err, dict):
        return frame_id, _error_info(err)
    return frame_id, read_ack(body, frame_id)


# -- events: GET /v1/events -----------------------------------------------------------

EVENTS_PATH: Final = "/v1/events"
EventFormat = Literal["json", "binary"]
#: Seconds between the keep-alive comments of an idle Server-Sent Events stream; a
#: client that hears nothing for several of them may take the server for gone.
EVENTS_KEEPALIVE: Final = 15.0
#: The head of a binary event frame: the event's seq (u64 little-endian); the
#: record's bytes follow, as the program published them.
EVENT_SEQ: Final = struct.Struct("<Q")


def parse_events_query(query: bytes | str) -> tuple[str, EventFormat]:
    """``map`` (required) and ``format`` (``json``, the default, or ``binary``) of an
    events query; :class:`InvalidRequestError` otherwise. Other keys are ignored."""
    name = ""
    fmt: EventFormat = "json"
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key == "map":
            name = value
        elif key == "format":
            if value == "json":
                fmt = "json"
            elif value == "binary":
                fmt = "binary"
            else:
                raise InvalidRequestError(
                    f"query.format: Input should be 'json' or 'binary', got {value!r}"
                )
    if not name:
        raise InvalidRequestError("query.map: the event map to read is required (?map=NAME)")
    return name, fmt


def events_params(name: str, fmt: EventFormat = "json") -> dict[str, str]:
    """The query a client sends to read event map ``name``."""
    return {"map": name} if fmt == "json" else {"map": name, "format": fmt}


def event_json(item: dict[str, Any]) -> bytes:
    """One event or gap marker as compact JSON (one line: SSE ``data:`` needs no escaping)."""
    return _encode(item)


def binary_event(seq: int, data: bytes) -> bytes:
    return EVENT_SEQ.pack(seq) + data


def read_binary_event(frame: bytes) -> tuple[int, bytes]:
    """(seq, record bytes) of a binary event frame; ClientError when it is too short."""
    if len(frame) < EVENT_SEQ.size:
        raise ClientError(f"a binary event frame has at least 8 bytes, got {len(frame)}")
    return EVENT_SEQ.unpack_from(frame)[0], frame[EVENT_SEQ.size :]


def sse_message(data: bytes, *, seq: int | None = None, event: str | None = None) -> bytes:
    """One Server-Sent Events message: ``id`` the event's seq (none on a gap marker),
    ``event: lost`` on a gap marker, ``data`` the item's JSON."""
    head = b"" if seq is None else b"id: %d\n" % seq
    if event is not None:
        head += b"event: " + event.encode() + b"\n"
    return head + b"data: " + data + b"\n\n"


def read_event(raw: bytes | str) -> dict[str, Any]:
    """An event or gap marker as the client reads it; ClientError when it is not one."""
    body = _json(raw)
    if not isinstance(body, dict) or not ("seq" in body or "lost" in body):
        raise ClientError(f"the server sent something that is not an event: {raw!r:.200}")
    return body
