"""What ``ringbridge fleet status`` reads: each node's place in the stream.

Two sources, one per cursor mode:

- durable consumers (``--nats-cursor durable``): each durable's ack floor
  (every message up to it was committed by its node, or refused for good)
  and its pending count (messages of its subject not yet delivered);
- rollout receipts (``--nats-cursor pins``): each node's last resolved and
  last committed stream seq, from the KV bucket, and when it wrote them.

"Did every node apply message N?" (:func:`applied`): N's subject decides
which nodes it is for (their filter or subjects match it); a durable applied
it when its ack floor is at or past N, a receipt when its seq is. The ack
floor can lag behind what was committed (a node's acks are sent after its
commits; after a node restart, until its redeliveries are acked): "not yet"
means "not confirmed yet", never "lost".
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from nats.js.client import JetStreamContext
from nats.js.errors import BucketNotFoundError, NotFoundError

from .subjects import subject_matches

__all__ = ["DurableStatus", "FleetStatus", "ReceiptStatus", "applied", "read_status"]

_NODE_PREFIX = "ringbridge node "


@dataclass(frozen=True, slots=True)
class DurableStatus:
    name: str
    node: str | None  # from the description ringbridge gives the consumers it makes
    subject: str | None
    acked: int  # ack floor, stream seq
    delivered: int  # last delivered, stream seq
    pending: int
    ack_pending: int
    redelivered: int
    last_active: datetime | None


@dataclass(frozen=True, slots=True)
class ReceiptStatus:
    node: str
    subjects: tuple[str, ...]
    seq: int
    committed: int
    time: float


@dataclass
class FleetStatus:
    stream: str
    first_seq: int
    last_seq: int
    messages: int
    durables: list[DurableStatus] = field(default_factory=list)
    receipts: list[ReceiptStatus] = field(default_factory=list)
    receipts_bucket: str | None = None


def _node_of(description: str | None) -> str | None:
    if description and description.startswith(_NODE_PREFIX):
        rest = description[len(_NODE_PREFIX) :]
        return rest.split(":", 1)[0].split(" ", 1)[0] or None
    return None


def _receipt(raw: bytes | None) -> ReceiptStatus | None:
    try:
        v: Any = json.loads(raw or b"")
        return ReceiptStatus(
            node=str(v["node"]),
            subjects=tuple(str(s) for s in v.get("subjects", ())),
            seq=int(v["seq"]),
            committed=int(v["committed"]),
            time=float(v["time"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


async def read_status(
    js: JetStreamContext, stream: str, receipts_bucket: str | None = None
) -> FleetStatus:
    """The stream's range, its durable consumers and (if the bucket exists) the receipts.

    Raises ``nats.js.errors.NotFoundError`` when the stream does not exist.
    """
    info = await js.stream_info(stream)
    st = FleetStatus(
        stream=stream,
        first_seq=info.state.first_seq,
        last_seq=info.state.last_seq,
        messages=info.state.messages,
    )
    for c in await js.consumers_info(stream):
        if not c.config.durable_name:
            continue  # ephemeral: a pins-mode node's reader, or someone else's
        st.durables.append(
            DurableStatus(
                name=c.name,
                node=_node_of(c.config.description),
                subject=c.config.filter_subject,
                acked=c.ack_floor.stream_seq if c.ack_floor else 0,
                delivered=c.delivered.stream_seq if c.delivered else 0,
                pending=c.num_pending or 0,
                ack_pending=c.num_ack_pending or 0,
                redelivered=c.num_redelivered or 0,
                last_active=getattr(c.delivered, "last_active", None),
            )
        )
    st.durables.sort(key=lambda d: (d.node or d.name, d.name))
    if receipts_bucket:
        try:
            kv = await js.key_value(receipts_bucket)
        except (BucketNotFoundError, NotFoundError):
            return st
        st.receipts_bucket = receipts_bucket
        try:
            keys = await kv.keys()
        except Exception:  # nats-py raises NoKeysError (and others) for an empty bucket
            keys = []
        for key in keys:
            entry = await kv.get(key)
            r = _receipt(entry.value)
            if r is not None:
                st.receipts.append(r)
        st.receipts.sort(key=lambda r: r.node)
    return st


@dataclass(frozen=True, slots=True)
class Applied:
    who: str  # durable name or node name
    applied: bool
    at: int  # ack floor or receipt seq


def applied(st: FleetStatus, seq: int, subject: str) -> list[Applied]:
    """For each durable or receipt that message ``seq`` (on ``subject``) is for: applied?"""
    out: list[Applied] = []
    for d in st.durables:
        if d.subject is None or subject_matches(d.subject, subject):
            out.append(Applied(d.name, d.acked >= seq, d.acked))
    for r in st.receipts:
        if not r.subjects or any(subject_matches(s, subject) for s in r.subjects):
            out.append(Applied(r.node, r.seq >= seq, r.seq))
    return out
