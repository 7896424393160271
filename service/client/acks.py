"""Answers from the server, as the client raises them: acks and rejections.

The contract (README, "Sending samples"; written once in
:mod:`ringbridge.wire`): a 200 or a WebSocket ack means the batch is
committed (``state`` says whether the kernel has consumed it too); a 202
means committed but not consumed within the wait -- never resend it. A
refusal the wire rules mark as "retry" (503, and its WebSocket error ack)
means nothing of the batch was committed: it may be sent again after
``Retry-After``. Any other error is the batch's or the request's fault and
would fail again.
"""

from __future__ import annotations

from typing import Any

from .. import wire
from ..errors import RejectedError
from ..wire import Ack, ErrorInfo


def _rejected(status: int, err: ErrorInfo, retry_after: float | None, batch: Any) -> RejectedError:
    return RejectedError(
        status,
        err.code,
        err.message,
        index=err.index,
        retry_after=retry_after,
        retryable=wire.retryable(err.code, status),
        batch=batch,
    )


def error_from_body(
    status: int, raw: bytes | str, retry_after: str | None = None, batch: Any = None
) -> RejectedError:
    """A :class:`RejectedError` from an HTTP error answer (``{"error": {...}}`` or anything)."""
    return _rejected(status, wire.read_error(raw), wire.retry_after_seconds(retry_after), batch)


def ws_ack(raw: bytes | str) -> tuple[Any, Ack | RejectedError]:
    """(id, ack or error) of one WebSocket ack frame.

    An error ack's ``status`` is the one the same error gets over HTTP.
    """
    fid, answer = wire.read_frame_answer(raw)
    if isinstance(answer, ErrorInfo):
        return fid, _rejected(wire.rule(answer.code).status, answer, None, fid)
    return fid, answer
