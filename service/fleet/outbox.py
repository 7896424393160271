"""What a node publishes back: dead letters (invalid messages) and rollout receipts.

Dead letter: the message's body and headers, republished to the dead-letter
subject with the error in ``Ringbridge-*`` headers and a ``Nats-Msg-Id`` of
stream, seq and node -- a stream that captures the subject drops the copy a
crash-and-retry would send twice. Sent through JetStream (confirmed) when a
stream captures the subject, as a plain NATS message otherwise.

Receipt (``--nats-cursor pins``): one key per node in a KV bucket,
``{"node", "stream", "subjects", "seq", "committed", "time"}`` -- the node's place in the
stream, read by ``ringbridge fleet status``.
"""

from __future__ import annotations

import json
import logging
import re
import time

from nats.aio.client import Client
from nats.errors import NoRespondersError
from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, NoStreamResponseError
from nats.js.kv import KeyValue

from ..errors import RingbridgeError
from .config import FleetConfig
from .sequencer import Delivery
from .stats import FleetCounters

__all__ = ["DEAD_LETTER_HEADERS", "Receipts", "dead_letter", "dead_letter_counted", "receipt_json"]

log = logging.getLogger("ringbridge.fleet")

DEAD_LETTER_HEADERS = (
    "Ringbridge-Error-Code",
    "Ringbridge-Error",
    "Ringbridge-Error-Index",
    "Ringbridge-Stream",
    "Ringbridge-Stream-Seq",
    "Ringbridge-Subject",
    "Ringbridge-Node",
)
_LINE_BREAKS = re.compile(r"[\r\n]+")


def _header_value(text: str, limit: int = 1024) -> str:
    # Header values are one line in the NATS protocol.
    return _LINE_BREAKS.sub(" ", text)[:limit]


async def dead_letter(
    nc: Client,
    js: JetStreamContext,
    subject: str,
    d: Delivery,
    *,
    stream: str,
    node: str,
    error: RingbridgeError,
) -> None:
    """Republishes ``d`` with ``error``; raises on failure (the caller counts it)."""
    headers = {k: v for k, v in (d.headers or {}).items() if not str(k).lower().startswith("nats-")}
    index = getattr(error, "index", None)
    headers.update(
        {
            "Ringbridge-Error-Code": error.code,
            "Ringbridge-Error": _header_value(error.message),
            "Ringbridge-Error-Index": "" if index is None or index < 0 else str(index),
            "Ringbridge-Stream": stream,
            "Ringbridge-Stream-Seq": str(d.seq),
            "Ringbridge-Subject": d.subject,
            "Ringbridge-Node": node,
            "Nats-Msg-Id": f"{stream}-{d.seq}-{node}",
        }
    )
    try:
        await js.publish(subject, d.data, timeout=5.0, headers=headers)
    except (NoRespondersError, NoStreamResponseError):
        # No stream captures the subject: a plain NATS message, for subscribers.
        await nc.publish(subject, d.data, headers=headers)


async def dead_letter_counted(
    nc: Client,
    js: JetStreamContext,
    subject: str,
    d: Delivery,
    cfg: FleetConfig,
    error: RingbridgeError,
    counters: FleetCounters,
) -> None:
    """:func:`dead_letter`, counted; a failure is logged, never raised: a dead
    letter never blocks the stream."""
    try:
        await dead_letter(nc, js, subject, d, stream=cfg.stream, node=cfg.node, error=error)
        counters.dead_lettered += 1
    except Exception as err:
        counters.dead_letter_failures += 1
        log.warning("dead letter not published", extra={"error": repr(err)})


def receipt_json(
    node: str, stream: str, subjects: tuple[str, ...], seq: int, committed: int
) -> bytes:
    return json.dumps(
        {
            "node": node,
            "stream": stream,
            "subjects": list(subjects),
            "seq": seq,
            "committed": committed,
            "time": time.time(),
        }
    ).encode()


class Receipts:
    """The node's receipt in the KV bucket (made if missing), written when it changed."""

    def __init__(
        self,
        js: JetStreamContext,
        bucket: str,
        node: str,
        stream: str,
        subjects: tuple[str, ...],
    ) -> None:
        self._js = js
        self.bucket = bucket
        self.node = node
        self.stream = stream
        self.subjects = subjects
        self._kv: KeyValue | None = None
        self._written: tuple[int, int] | None = None
        self.failures = 0

    async def _bucket(self) -> KeyValue:
        if self._kv is None:
            try:
                self._kv = await self._js.key_value(self.bucket)
            except BucketNotFoundError:
                self._kv = await self._js.create_key_value(
                    bucket=self.bucket, history=1, description="ringbridge rollout receipts"
                )
        return self._kv

    async def write(self, seq: int, committed: int) -> bool:
        """Puts the receipt if it changed; False (counted, logged) if that failed."""
        if self._written == (seq, committed):
            return True
        try:
            kv = await self._bucket()
            await kv.put(
                self.node, receipt_json(self.node, self.stream, self.subjects, seq, committed)
            )
        except Exception as exc:  # the receipt is advisory: never stop the node for it
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning(
                    "rollout receipt not written",
                    extra={"error": repr(exc), "failures": self.failures},
                )
            return False
        self._written = (seq, committed)
        return True
