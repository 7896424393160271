"""One ``POST /v1/samples`` on the data plane: :class:`PostRequest`.

The steps and rules are those of :mod:`ringbridge.api.ingest` (token, query,
media type, ``Content-Length`` limit, admission credit before the body is
read, body timeout, validation of the whole batch, the ack or the error from
:mod:`ringbridge.wire`), without FastAPI's routing or ASGI messages:

1. the head gives the length: credit is taken for it (503 at once, the body
   unread, the connection closed: nothing waits for credit);
2. a binary body whose records may go to the ring as they are (a multiple of
   8 bytes) is received straight into ring space claimed for it
   (:meth:`~ringbridge.producer.task.Producer.claim`); the socket's bytes
   land there, and one native pass validates them in place; the region is
   then ready (published in its turn) or discarded (one DISCARD record);
3. anything else -- JSON, a ring full or batches already in line -- is
   received into a buffer of the body's size (paid by the same credit),
   decoded (the native JSON scanner, else the exact path) and either
   copied into ring space at once (:meth:`~ringbridge.producer.task.Producer.commit_now`)
   or put in line for the producer task;
4. the answer is written when the region is published (or the batch's
   future resolves), from the ack's bytes; ``wait=consumed`` waits for the
   kernel first.

With an ``Idempotency-Key``, once the body is in :mod:`..idempotency` says
which sending it is: a replay gets the first ack (its region discarded), the
key's batch publishes with the key's ``before_commit``, one behind a sending
still in flight waits for it in memory.

A client that leaves before the publish gets nothing committed: its region
publishes as DISCARD (``wanted`` is False), a batch in line is withdrawn.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ...errors import RequestTimeoutError, RingbridgeError, StoppingError
from ...producer.admission import Credit
from ...producer.keys import Keyed, KeyRecord
from ...producer.observe import Arrival
from ...producer.regions import Region
from ...producer.submission import Submission
from ...runtime import Runtime
from ...wire import Ack, WaitFor, parse_idempotency_key, parse_query
from .. import ingest
from ..auth import check_authorization
from ..idempotency import body_digest, first_sending, key_digest, look_now
from ..keepalive import bytes_waiting
from .handler import Handler
from .head import Head
from .responses import CONTINUE

if TYPE_CHECKING:
    from .connection import DataPlaneProtocol

__all__ = ["PostRequest"]


class PostRequest(Handler):
    """One request: admitted, received, committed, answered (see the module docstring)."""

    __slots__ = (
        "arrival",
        "body",
        "c",
        "close",
        "committed",
        "credit",
        "deadline",
        "digest",
        "done",
        "head",
        "key",
        "keyed",
        "kind",
        "nbytes",
        "region",
        "rt",
        "sub",
        "wait",
        "waiter",
    )

    def __init__(self, conn: DataPlaneProtocol, head: Head) -> None:
        self.c = conn
        self.head = head
        self.close = head.close or conn.gone
        self.rt: Runtime | None = None
        self.credit: Credit | None = None
        self.region: Region | None = None
        self.body: bytearray | None = None
        self.sub: Submission | None = None
        self.waiter: asyncio.Task[None] | None = None
        self.wait: WaitFor = "committed"
        self.kind = ingest.BINARY
        self.nbytes = 0
        self.deadline = 0.0
        self.done = False
        self.committed = False
        self.arrival: Arrival | None = None
        self.key: bytes | None = None  # the Idempotency-Key's digest
        self.digest = b""  # the body's, with a key
        self.keyed: Keyed | None = None

    # -- 1. admission ----------------------------------------------------------------

    def begin(self) -> None:
        try:
            self._admit()
            self._receive()
        except RingbridgeError as exc:
            # Refused before the body was read: the connection cannot be
            # reused (the body would follow), so it closes -- once the body
            # is read and dropped (see answer()).
            self._abandon()
            self.close = True
            unread = self._declared_length()
            self.answer(self.c.p.answers.error(self.rt, exc, close=True), 0, unread)

    def _admit(self) -> None:
        c, head = self.c, self.head
        rt = self.rt = c.p.runtime
        if rt is None:
            raise StoppingError("the service is not running (starting or stopping)")
        settings = rt.settings
        plan = head.plan
        if plan is None or plan[0] is not settings:
            # Worked out once per distinct head (heads are cached by their
            # bytes); anything refused raises here every time.
            check_authorization(head.authorization, settings.token)
            wait, timeout = parse_query(head.query)
            kind = ingest.media_type(head.content_type)
            n = ingest.reservation(head.content_length or "0", settings.max_batch_bytes)
            plan = head.plan = (settings, wait, ingest.request_timeout(rt, timeout), kind, n)
        _, self.wait, timeout, self.kind, self.nbytes = plan  # type: ignore[assignment]
        if head.key is not None:
            self.key = key_digest(parse_idempotency_key(head.key) or "")
        self.arrival = Arrival.now("json" if self.kind == ingest.JSON else "binary")
        credit = self.credit = rt.producer.admit(self.nbytes, timeout)  # type: ignore[arg-type]
        self.deadline = credit.deadline
        if head.expect_continue:
            c.write(CONTINUE)

    # -- 2./3. the body --------------------------------------------------------------

    def _receive(self) -> None:
        rt, credit, n, c = self.rt, self.credit, self.nbytes, self.c
        assert rt is not None and credit is not None
        dest: memoryview | None = None
        if self.kind == ingest.BINARY and n >= 8 and not n % 8:
            started = self.arrival.at if self.arrival is not None else None
            region = self.region = rt.producer.claim(n, credit, self, started)
            if region is not None:
                dest = rt.producer.view(region)
        if dest is None:
            self.body = bytearray(n)
            dest = memoryview(self.body)
        c.receive(dest, n, self._received)
        if c.sink is not None and not self.done:
            # Not all here yet: the client has body_timeout to send the rest.
            c.body_timer.set(c.loop.time() + rt.settings.body_timeout, self._body_late)

    def _body_late(self) -> None:
        self._abandon()
        got = self.c.sink.got if self.c.sink is not None else 0
        self.c.sink = None
        self.close = True
        exc = RequestTimeoutError(
            f"body not received within {self.rt.settings.body_timeout if self.rt else 0:g}s "
            f"of admission ({got} bytes so far)"
        )
        self.answer(self.c.p.answers.error(self.rt, exc, close=True), 0)

    def _received(self) -> None:
        self.c.body_timer.clear()
        rt = self.rt
        assert rt is not None and self.credit is not None
        try:
            region = self.region
            if region is not None:
                p = rt.producer
                counts = self.c.p.in_place.validate(p.address(region), self.nbytes)
                if counts is not None:
                    if self.key is None or self._keyed_in_ring(region, counts[0]):
                        p.ready(region, *counts, self.keyed)  # answered when published
                    return
                exc = self.c.p.in_place.refusal(bytes(p.view(region)))
                self.region = None
                p.discard(region)
                raise exc
            self._decoded()
        except RingbridgeError as exc:
            self._abandon()
            self.answer(self.c.p.answers.error(rt, exc, close=self.close), 0)

    def _decoded(self) -> None:
        rt, credit, body = self.rt, self.credit, self.body
        assert rt is not None and credit is not None and body is not None
        data = bytes(body)
        self.body = None
        if len(data) > ingest.THREAD_DECODE_BYTES or self.key is not None:
            # The exact path may take milliseconds here: off the event loop.
            self.waiter = asyncio.ensure_future(self._decode_off_loop(data))
            return
        self._commit(ingest.decode_charged(rt, self.kind, data)[1])

    async def _decode_off_loop(self, data: bytes) -> None:
        rt = self.rt
        assert rt is not None and self.credit is not None
        try:
            if self.key is not None and self.keyed is None:
                self.digest = self.digest or await ingest.offload(len(data), body_digest, data)
                seen = await first_sending(rt, self.key, self.digest, self.deadline)
                if isinstance(seen, KeyRecord):
                    self._replay(seen)
                    return
                self.keyed = seen
            _, batch = await ingest.decode(rt, self.kind, data, self.deadline)
            self._commit(batch)
        except RingbridgeError as exc:
            self._abandon()
            self.answer(self.c.p.answers.error(rt, exc, close=self.close), 0)

    def _keyed_in_ring(self, region: Region, count: int) -> bool:
        """True when the keyed body in ``region`` is the key's batch (publish it)."""
        rt = self.rt
        assert rt is not None and self.key is not None
        p = rt.producer
        self.digest = body_digest(p.view(region))
        seen = look_now(rt, self.key, self.digest)
        if isinstance(seen, Keyed):
            seen.count = count
            self.keyed = seen
            return True
        self.region = None
        if isinstance(seen, KeyRecord):
            p.discard(region)
            self._replay(seen)
            return False
        # Behind a sending in flight: it waits in memory (never in a claimed region).
        self.body = bytearray(p.view(region))
        p.keep_credit(region)
        p.discard(region)
        self._decoded()
        return False

    def _replay(self, rec: KeyRecord) -> None:
        """The key's batch was committed: its first ack, nothing written again."""
        if self.credit is not None:
            self.credit.release()
        self.committed = True
        self._acked(rec.ack(), replayed=True)

    def _commit(self, batch: Any) -> None:
        rt, credit, keyed = self.rt, self.credit, self.keyed
        assert rt is not None and credit is not None
        credit.resize(batch.nbytes)
        started = self.arrival.at if self.arrival is not None else None
        p = rt.producer
        if keyed is not None:
            keyed.count = batch.count
        if p.commit_now(batch, credit, self, started, keyed) is not None:
            return  # answered when published
        sub = self.sub = p.line_up(batch, credit, keyed)
        sub.future.add_done_callback(self._lined_up)

    def _lined_up(self, fut: asyncio.Future[Ack]) -> None:
        self.sub = None
        if fut.cancelled():
            return  # withdrawn: the client left
        exc = fut.exception()
        if exc is not None:
            if not isinstance(exc, RingbridgeError):
                self.c.fail(exc)
                return
            self.answer(self.c.p.answers.error(self.rt, exc, close=self.close), 0)
            return
        self._acked(fut.result())

    # -- the region's owner ------------------------------------------------------------

    @property
    def wanted(self) -> bool:
        return not self.c.gone

    def region_published(self, region: Region, ack: Ack) -> None:
        self.region = None
        self._acked(ack)

    def region_failed(self, region: Region, exc: RingbridgeError) -> None:
        if self.region is region and self.c.sink is not None:
            self.c.sink = None  # still receiving into it: not any more
            self.close = True
        self.region = None
        self.answer(self.c.p.answers.error(self.rt, exc, close=self.close), 0)

    @property
    def arriving(self) -> bool:
        return self.c.sink is not None and bytes_waiting(self.c.transport)

    def region_evict(self, region: Region) -> None:
        """The body goes on in memory: what arrived is copied out of the ring."""
        rt, sink = self.rt, self.c.sink
        assert rt is not None and sink is not None and self.region is region
        body = self.body = bytearray(self.nbytes)
        body[: sink.got] = rt.producer.view(region)[: sink.got]
        sink.buf = memoryview(body)
        self.region = None

    # -- 4. the answer -------------------------------------------------------------------

    def _acked(self, ack: Ack, replayed: bool = False) -> None:
        self.committed = True
        if self.wait == "consumed" and not self.c.gone:
            self.waiter = asyncio.ensure_future(self._consumed(ack, replayed))
            return
        self._answer_ack(ack, replayed)

    async def _consumed(self, ack: Ack, replayed: bool) -> None:
        rt = self.rt
        assert rt is not None
        left = max(0.0, self.deadline - self.c.loop.time())
        self._answer_ack(await rt.producer.wait_consumed(ack, left), replayed)

    def _answer_ack(self, ack: Ack, replayed: bool = False) -> None:
        rt = self.rt
        if rt is not None and self.arrival is not None and not replayed:
            rt.batches.acked("http", self.arrival, ack, self.wait)
        close = self.close or rt is None or rt.streams.stopping
        self.answer(self.c.p.answers.ack(ack, self.wait, close, replayed), 200)

    def answer(self, data: bytes, status: int, unread: int = 0) -> None:
        """Write the answer; ``unread`` body bytes are dropped (within ``body_timeout``)
        before closing: else a reset, and a client still sending never reads a 503."""
        if self.done:
            return
        self.done = True
        if self.keyed is not None:
            self.keyed.abandoned()  # a no-op once it was committed
        c = self.c
        c.write(data)
        if c.p.access.hasHandlers():
            code = int(data[9:12])
            c.p.access_log(c.client, "POST", "/v1/samples", code)
        if unread > 0 and not c.gone:
            late = c.loop.call_later(c.p.settings.body_timeout, c.close)

            def dropped() -> None:
                late.cancel()
                c.request_done(True)

            c.skip(unread, dropped)
            return
        c.request_done(self.close)

    def _declared_length(self) -> int:
        """The body's ``Content-Length`` when it is one the service would read (else 0)."""
        declared = (self.head.content_length or "").strip()
        n = int(declared) if declared.isdigit() else 0
        return n if n <= self.c.p.settings.max_batch_bytes else 0

    # -- leaving -----------------------------------------------------------------------

    def _abandon(self) -> None:
        """Nothing of this request will be committed: give back what it holds."""
        rt = self.rt
        self.c.body_timer.clear()
        if self.region is not None and rt is not None:
            region, self.region = self.region, None
            rt.producer.discard(region)
        if self.sub is not None and rt is not None:
            rt.producer.withdraw(self.sub)
            self.sub = None
        if self.credit is not None:
            self.credit.release()

    def lost(self) -> None:
        if self.done:
            return
        self.done = True
        if self.keyed is not None:
            self.keyed.abandoned()  # not wanted: never committed (a no-op once it was)
        if self.waiter is not None:
            self.waiter.cancel()
        if self.committed:
            return  # only the answer is lost
        rt = self.rt
        if rt is not None and self.credit is not None and self.sub is None:
            rt.producer.note_abandoned()  # a batch in line counts when withdrawn
        if self.region is not None and self.c.sink is None:
            return  # ready: it publishes as DISCARD (not wanted), credit and all
        self._abandon()

    def shutdown(self) -> None:
        # The request finishes (its batch commits or fails within the
        # producer's grace); the connection closes after the answer.
        self.close = True
