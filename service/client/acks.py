"""Answers from the server: acks, error bodies, and what may be retried.

The contract (README, "Sending samples"): a 200 or a WebSocket ack means
the batch is committed (``state`` says whether the kernel has consumed it
too); a 202 means committed but not consumed within the wait -- never resend
it. A 503 (and its WebSocket error ack) means nothing of the batch was
committed: it may be sent again after ``Retry-After``. Any other error is
the batch's or the request's fault and would fail again.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from ..errors import ClientError, RejectedError

#: WebSocket error-ack codes that mean "nothing committed, come back later"
#: (the codes the HTTP API answers with 503).
RETRYABLE_CODES = frozenset(
    {"ring_full", "ring_full_timeout", "overloaded", "stopping", "closed", "unavailable"}
)

#: The HTTP status of other WebSocket error codes (422 when not listed).
_WS_STATUS = {"too_large": 413, "unauthorized": 401, "forbidden": 403}


@dataclass(frozen=True)
class Ack:
    """A committed batch: its samples are ``first_seq..last_seq`` of the service."""

    accepted: int
    first_seq: int
    last_seq: int
    #: "committed" (in the ring) or "consumed" (the kernel's consumer passed it).
    state: str
    #: The batch's id on a WebSocket stream (its 0-based frame number); None over HTTP.
    id: Any = None

    @property
    def consumed(self) -> bool:
        return self.state == "consumed"


def _decode(raw: bytes | str) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return None


def ack_from(body: Any, batch_id: Any = None) -> Ack:
    if not isinstance(body, dict) or "accepted" not in body:
        raise ClientError(f"the server's answer is not an ack: {body!r:.200}")
    return Ack(
        accepted=int(body["accepted"]),
        first_seq=int(body["first_seq"]),
        last_seq=int(body["last_seq"]),
        state=str(body.get("state", "committed")),
        id=batch_id,
    )


def error_from_body(
    status: int, raw: bytes | str, retry_after: str | None = None, batch: Any = None
) -> RejectedError:
    """A :class:`RejectedError` from an error answer (``{"error": {...}}`` or anything)."""
    body = _decode(raw)
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = str(err.get("code", "error"))
        message = str(err.get("message", ""))
        index = err.get("index") if isinstance(err.get("index"), int) else None
    else:
        text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
        code, message, index = "http_error", text.strip()[:300] or "(no body)", None
    wait: float | None = None
    if retry_after is not None:
        try:
            wait = float(retry_after)
        except ValueError:
            wait = None
    return RejectedError(status, code, message, index=index, retry_after=wait, batch=batch)


def ws_ack(raw: bytes | str) -> tuple[Any, Ack | RejectedError]:
    """(id, ack or error) of one WebSocket ack frame."""
    body = _decode(raw)
    if not isinstance(body, dict) or "id" not in body:
        raise ClientError(f"the server's WebSocket answer is not an ack: {raw!r:.200}")
    fid = body["id"]
    err = body.get("error")
    if isinstance(err, dict):
        code = str(err.get("code", "error"))
        status = 503 if code in RETRYABLE_CODES else _WS_STATUS.get(code, 422)
        index = err.get("index") if isinstance(err.get("index"), int) else None
        return fid, RejectedError(status, code, str(err.get("message", "")), index=index, batch=fid)
    return fid, ack_from(body, fid)
