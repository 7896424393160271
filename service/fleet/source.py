"""One subject of a node: its JetStream pull consumer and the pull requests made to it.

``durable`` mode: a durable consumer per subject, explicit acks. It is
created if missing (filter on the subject, deliver from the stream's start)
and left alone if present -- but refused if it filters on another subject or
is not an explicit-ack pull consumer: it is someone else's.

``pins`` mode: no per-node state in JetStream. An ephemeral, ack-less,
in-memory pull consumer is made to deliver from the node's pinned position
+ 1, and made again whenever it is gone (server restart, inactivity) --
the ordered-consumer pattern, over pull requests so that the node decides how
much is in flight.

Pull requests are made here, not through nats-py's ``fetch``: each asks for
at most ``batch`` messages and ``max_bytes`` bytes (what the node's in-flight
window has room for) and lives until the server ends it (a status message:
404/408 nothing more, 409 size or consumer gone) or the batch is full.
Deliveries are handed to the front door as they arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from ..errors import ConfigError
from .sequencer import Delivery

__all__ = ["PullSource"]

log = logging.getLogger("ringbridge.fleet")

_API = "$JS.API"
#: How long after its expiry a request with no answer is given up locally
#: (its answer was lost with a connection).
_GRACE = 2.0


@dataclass
class _Request:
    remaining: int
    done: asyncio.Future[str]

    def end(self, why: str) -> None:
        if not self.done.done():
            self.done.set_result(why)


class PullSource:
    """The consumer of one subject for one node, and its inbox."""

    def __init__(
        self,
        index: int,
        nc: Client,
        js: JetStreamContext,
        *,
        stream: str,
        subject: str,
        name: str,
        node: str,
        mode: str,
        ack_wait: float,
        max_ack_pending: int,
        on_delivery: Callable[[Delivery], None],
    ) -> None:
        self.index = index
        self._nc = nc
        self._js = js
        self.stream = stream
        self.subject = subject
        #: The durable's name; in pins mode the server-made name of the current consumer.
        self.name = name if mode == "durable" else ""
        self._durable = name
        self.node = node
        self.mode = mode
        self._ack_wait = ack_wait
        self._max_ack_pending = max_ack_pending
        self._on_delivery = on_delivery
        self._sub: Subscription | None = None
        self._inbox = ""
        self._req: _Request | None = None
        #: Set when the server says the consumer is gone: :meth:`ensure` again.
        self.gone = False

    @property
    def label(self) -> str:
        """A stable name of this consumer for metrics: the durable's name, in pins mode
        too (where the server names each consumer it makes anew)."""
        return self._durable

    # -- the consumer ----------------------------------------------------------

    async def ensure(self, position: int) -> int | None:
        """Makes sure the consumer exists; returns the first stream seq a consumer made
        now delivers from (its deliveries chain from there), or None for an existing one."""
        if self._sub is None:
            self._inbox = self._nc.new_inbox()
            self._sub = await self._nc.subscribe(self._inbox, cb=self._on_msg)
        self.gone = False
        if self.mode == "pins":
            return await self._make_ordered(position)
        try:
            info = await self._js.consumer_info(self.stream, self._durable)
        except NotFoundError:
            pass
        else:
            self._check_existing(info)
            return None
        cfg = ConsumerConfig(
            durable_name=self._durable,
            description=f"ringbridge node {self.node}: {self.subject}",
            filter_subject=self.subject,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_ack_pending=self._max_ack_pending,
            max_deliver=-1,
        )
        await self._js.add_consumer(self.stream, cfg)
        log.info(
            "created durable consumer",
            extra={"stream": self.stream, "durable": self._durable, "subject": self.subject},
        )
        return 1

    def _check_existing(self, info: ConsumerInfo) -> None:
        c = info.config
        problem = None
        if c.filter_subject != self.subject:
            problem = f"filters on {c.filter_subject or 'every subject'!s}, not {self.subject}"
        elif c.ack_policy != AckPolicy.EXPLICIT:
            problem = f"has ack policy {c.ack_policy}, not explicit"
        elif c.deliver_subject:
            problem = "is a push consumer, not a pull consumer"
        if problem is not None:
            raise ConfigError(
                f"durable consumer {self._durable} on stream {self.stream} {problem}: "
                "delete it or choose another --nats-durable"
            )

    async def _make_ordered(self, position: int) -> int:
        await self._delete_ordered()
        cfg = ConsumerConfig(
            description=f"ringbridge node {self.node} (pins): {self.subject}",
            filter_subject=self.subject,
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=position + 1,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=60.0,
            mem_storage=True,
            num_replicas=1,
        )
        info = await self._js.add_consumer(self.stream, cfg)
        self.name = info.name
        return position + 1

    async def _delete_ordered(self) -> None:
        if self.mode == "pins" and self.name:
            name, self.name = self.name, ""
            with contextlib.suppress(Exception):
                await self._js.delete_consumer(self.stream, name)

    async def info(self) -> ConsumerInfo | None:
        if not self.name:
            return None
        info: ConsumerInfo = await self._js.consumer_info(self.stream, self.name)
        return info

    # -- pull requests -------------------------------------------------------------

    async def pull(self, batch: int, max_bytes: int, expires: float) -> str:
        """One pull request; returns why it ended (a status code, ``batch``, ``timeout``)."""
        if self._req is not None:
            raise RuntimeError("one pull request at a time per source")
        req = _Request(batch, asyncio.get_running_loop().create_future())
        self._req = req
        body = {"batch": batch, "max_bytes": max_bytes, "expires": int(expires * 1e9)}
        try:
            await self._nc.publish(
                f"{_API}.CONSUMER.MSG.NEXT.{self.stream}.{self.name}",
                json.dumps(body).encode(),
                reply=self._inbox,
            )
            try:
                return await asyncio.wait_for(asyncio.shield(req.done), expires + _GRACE)
            except TimeoutError:
                return "timeout"
        finally:
            req.end("cancelled")
            self._req = None

    def interrupt(self, why: str) -> None:
        """Ends the request in flight locally (e.g. after a reconnect, which lost it)."""
        if self._req is not None:
            self._req.end(why)

    async def _on_msg(self, msg: Msg) -> None:
        if not (msg.reply or "").startswith("$JS.ACK."):
            self._on_status(msg)
            return
        meta = msg.metadata
        d = Delivery(
            source=self.index,
            seq=meta.sequence.stream,
            subject=msg.subject,
            data=msg.data,
            headers=msg.headers,
            consumer_seq=meta.sequence.consumer,
            delivered=meta.num_delivered,
            handle=msg if self.mode == "durable" else None,
        )
        req = self._req
        if req is not None:
            req.remaining -= 1
            if req.remaining <= 0:
                req.end("batch")
        self._on_delivery(d)

    def _on_status(self, msg: Msg) -> None:
        headers: dict[str, Any] = dict(msg.headers or {})
        code = str(headers.get("Status", ""))
        desc = str(headers.get("Description", ""))
        if code == "100":
            return  # heartbeat or flow control: not the end of the request
        if code == "409" and "deleted" in desc.lower():
            self.gone = True
        elif code == "503":
            self.gone = True  # no responders: JetStream (or the consumer) is not there
        if self._req is not None:
            self._req.end(f"{code} {desc}".strip())

    async def close(self) -> None:
        self.interrupt("closed")
        await self._delete_ordered()
        if self._sub is not None:
            sub, self._sub = self._sub, None
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
