"""``Idempotency-Key`` at the edge: which sending of a keyed batch this request is.

The rule (:mod:`ringbridge.wire`, :mod:`ringbridge.producer.keys`), for both
paths of ``POST /v1/samples`` -- FastAPI's (:mod:`.ingest`) and the data
plane's (:mod:`.dataplane.post`): once its body is in, a keyed request is

- a *replay*: the key's batch was committed -- with this very body (else 422
  ``key_reused``); it is answered with that first ack, nothing is written;
- *the batch*: nothing under the key is committed or in flight, so this
  request's batch becomes the key's (a :class:`Keyed`, its ``before_commit``);
- *behind* an earlier sending still in flight: it waits for that outcome
  (503 ``in_flight`` at its own deadline), then looks again.

No await between the last look and ``begin``: two resends cannot both
become the batch.
"""

from __future__ import annotations

import asyncio

from .. import wire
from ..errors import KeyInFlightError, KeyReusedError
from ..producer.keys import Keyed, KeyRecord, body_digest, key_digest
from ..runtime import Runtime

__all__ = ["body_digest", "first_sending", "key_digest", "look_now"]


def look_now(rt: Runtime, key: bytes, body: bytes) -> KeyRecord | Keyed | None:
    """The committed first sending of ``key``'s batch (a replay), this request's own
    batch now in flight, or None: an earlier sending is in flight (wait for it)."""
    keys = rt.producer.keys
    done = keys.committed(key)
    if done is not None:
        if done.body != body:
            raise KeyReusedError(
                f"{wire.IDEMPOTENCY_KEY} names an earlier batch with another body "
                f"(seqs {done.first_seq}..{done.first_seq + done.count - 1}): "
                "a key must name one batch"
            )
        keys.replayed += 1
        return done
    if keys.in_flight(key) is None:
        return keys.begin(key, body)
    return None


async def first_sending(rt: Runtime, key: bytes, body: bytes, deadline: float) -> KeyRecord | Keyed:
    """:func:`look_now`, waiting (until ``deadline``, loop time) while an earlier
    sending is in flight: its outcome decides."""
    while True:
        seen = look_now(rt, key, body)
        if seen is not None:
            return seen
        earlier = rt.producer.keys.in_flight(key)
        assert earlier is not None
        try:
            async with asyncio.timeout_at(deadline):
                await asyncio.shield(earlier.done)
        except TimeoutError:
            raise KeyInFlightError(
                f"the batch of this {wire.IDEMPOTENCY_KEY} is still being committed "
                "(sent earlier); ask again"
            ) from None
