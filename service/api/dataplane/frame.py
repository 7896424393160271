"""One WebSocket data frame (or reassembled message) of a stream: :class:`Frame`.

A frame is taken when its header is read; from then on it owns a place in
the stream's ack order and, on its way to the ring, its batch's credit and
either a claimed region (a binary frame received in place) or a buffer (a
text frame, a fragmented message). A binary frame that cannot go to the ring
now is not read at all: it waits with a claim request in the producer's
line (``req``), its stream's reading paused -- the socket holds its bytes,
not our heap -- until the producer claims its region in its turn, then it is
received in place like the others. It ends with its ``answer``: the ack or
error ack the stream writes in its turn.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from ...errors import RingbridgeError
from ...producer.admission import Credit
from ...producer.observe import Arrival
from ...producer.regions import Region
from ...producer.submission import ClaimRequest, Submission
from ...schema import frame_id
from ...wire import Ack
from .. import ingest
from ..keepalive import bytes_waiting
from . import readahead

if TYPE_CHECKING:
    from .stream import Stream

__all__ = ["Frame"]


class Frame:
    """A frame from its header to its ack (see the module docstring)."""

    __slots__ = (
        "answer",
        "arrival",
        "body",
        "credit",
        "head",
        "id",
        "key",
        "nbytes",
        "receiving",
        "region",
        "req",
        "s",
        "sub",
        "text",
    )

    def __init__(
        self, stream: Stream, number: int, text: bool, nbytes: int, key: int, credit: Credit | None
    ) -> None:
        self.s = stream
        self.id: Any = number  # a text frame's own id replaces it once decoded
        self.text = text
        self.nbytes = nbytes
        self.key = key
        self.answer: bytes | None = None
        self.arrival: Arrival | None = Arrival.now("json" if text else "binary")
        # Reserved at the frame's header (api/wslimits.py): the batch's credit until its ack.
        self.credit = credit
        if credit is not None:
            credit.deadline = stream.c.loop.time() + stream.submit_timeout
        self.region: Region | None = None
        self.body: bytearray | None = None
        self.sub: Submission | None = None
        self.req: ClaimRequest | None = None  # waiting unread for its region
        self.receiving = False
        self.head = 0  # where its payload starts in its region (8: its header is there)

    # -- the payload ----------------------------------------------------------------------

    def begin(self) -> None:
        """The header is read; receive the payload where it goes."""
        s, n = self.s, self.nbytes
        c = s.c
        if not self.text:
            refusal = s.too_large(n)
            if refusal is not None:
                # Not read into memory at all: skipped, answered in its turn.
                if self.credit is not None:
                    self.credit.release()
                c.skip(n, lambda: s.refused(self, refusal))
                return
            if n >= 8 and not n % 8 and self.credit is not None:
                p = s.rt.producer
                at = self.arrival.at if self.arrival is not None else None
                region = self.region = (
                    readahead.claim(s, self, n, self.credit, at)
                    if readahead.MIN_SCANNED <= n <= readahead.MAX_SCANNED
                    else p.claim(n, self.credit, self, at)
                )
                if region is not None:
                    self.receiving = True
                    c.receive(p.view(region), n, self.in_ring, region.nbytes)
                    return
                try:
                    self.req = p.request_claim(n, self.credit, self, at)
                except RingbridgeError as exc:  # never fits the ring; stopping
                    c.skip(n, _nothing)
                    s.refused(self, exc)
                    return
                s.wait_for_ring()
                return
        body = self.body = bytearray(n)
        self.receiving = True
        c.receive(memoryview(body), n, self._received)

    def in_ring(self) -> None:
        """The whole payload is in ring space: unmask and validate it there."""
        self.receiving = False
        s, region = self.s, self.region
        if region is None:  # evicted meanwhile: the payload is in self.body
            self._received()
            return
        p = s.rt.producer
        ip = s.c.p.in_place
        head = self.head
        counts = ip.unmask_validate(p.address(region) + head, self.nbytes, self.key)
        if region.nbytes > head + self.nbytes:  # with frames read ahead behind it
            readahead.received(s, self, region, counts)
            return
        if counts is not None:
            if head:  # its header: an empty DISCARD record the kernel skips
                p.view(region)[:head] = readahead.EMPTY_DISCARD
            p.ready(region, *counts)  # acked when published
            return
        exc = ip.refusal(bytes(p.view(region)[head:]))
        self.region = None
        p.discard(region)
        s.refused(self, exc)

    def _received(self) -> None:
        self.receiving = False
        body = self.body
        assert body is not None
        self.body = None
        self.s.c.p.in_place.unmask_buffer(body, self.key)
        self.assembled(body)

    def assembled(self, body: bytearray) -> None:
        """The whole message, unmasked: decode it and commit it."""
        s = self.s
        if self.text and not body.isascii():
            try:
                body.decode()
            except UnicodeDecodeError:
                s.text_refused()
                return
        data = bytes(body)
        kind = ingest.TEXT_FRAME if self.text else ingest.BINARY
        if len(data) > ingest.THREAD_DECODE_BYTES:
            s.spawn(self._decode_off_loop(kind, data))
            return
        try:
            fid, batch = ingest.decode_charged(s.rt, kind, data)
        except RingbridgeError as exc:
            self._refuse(data, exc)
            return
        self._commit(fid, batch)

    async def _decode_off_loop(self, kind: str, data: bytes) -> None:
        try:
            fid, batch = await ingest.decode(self.s.rt, kind, data)
        except RingbridgeError as exc:
            self._refuse(data, exc)
            return
        self._commit(fid, batch)

    def _refuse(self, data: bytes, exc: RingbridgeError) -> None:
        if self.credit is not None:
            self.credit.release()
        if self.text:
            self.id = frame_id(data)
        self.s.refused(self, exc)

    def _commit(self, fid: Any, batch: Any) -> None:
        s = self.s
        if self.text:
            self.id = fid
        try:
            if self.credit is None:
                self.credit = s.batch_credit(batch.nbytes)
            else:
                self.credit.resize(batch.nbytes)
        except RingbridgeError as exc:
            if self.credit is not None:
                self.credit.release()
            s.refused(self, exc)
            return
        p = s.rt.producer
        at = self.arrival.at if self.arrival is not None else None
        try:
            if p.commit_now(batch, self.credit, self, at) is not None:
                return  # acked when published
            sub = self.sub = p.line_up(batch, self.credit)
        except RingbridgeError as exc:
            self.s.refused(self, exc)
            return
        sub.future.add_done_callback(self._lined_up)

    def _lined_up(self, fut: asyncio.Future[Ack]) -> None:
        self.sub = None
        if fut.cancelled():
            return
        exc = fut.exception()
        if isinstance(exc, RingbridgeError):
            self.s.refused(self, exc)
        elif exc is not None:
            self.s.c.fail(exc)
        else:
            self.s.acked(self, fut.result())

    # -- waiting unread for ring space (a ClaimOwner) --------------------------------------

    def claim_granted(self, region: Region) -> None:
        """Its turn came and the ring had room: receive the payload into ``region``."""
        self.req = None
        s = self.s
        c = s.c
        try:
            self.region = region
            self.receiving = True
            c.receive(s.rt.producer.view(region), self.nbytes, self.in_ring)
            s.ring_wait_over()
        except Exception as exc:  # a bug here must not reach the producer task
            c.fail(exc)

    def claim_failed(self, exc: RingbridgeError) -> None:
        """No region will come (the credit's deadline, shutdown): an error ack; the
        payload, never read, is read and dropped -- unless the stream reads no more."""
        self.req = None
        s = self.s
        c = s.c
        try:
            if not (c.gone or s.closing or s.stopping):
                c.skip(self.nbytes, _nothing)
            s.refused(self, exc)
            s.ring_wait_over()
        except Exception as err:
            c.fail(err)

    # -- the region's owner ---------------------------------------------------------------

    @property
    def wanted(self) -> bool:
        # A frame received whole commits even if its client has left since
        # (it may have sent it without waiting for acks).
        return True

    def region_published(self, region: Region, ack: Ack) -> None:
        self.region = None
        self.s.acked(self, ack)

    def region_failed(self, region: Region, exc: RingbridgeError) -> None:
        if self.receiving:
            self.s.c.sink = None
            self.receiving = False
        self.region = None
        self.s.refused(self, exc)

    @property
    def arriving(self) -> bool:
        return self.receiving and bytes_waiting(self.s.c.transport)

    def region_evict(self, region: Region) -> None:
        """The payload goes on in memory: what arrived is copied out of the ring."""
        sink = self.s.c.sink
        assert sink is not None and self.receiving
        head, got = self.head, sink.got - self.head
        body = self.body = bytearray(self.nbytes)
        body[:got] = self.s.rt.producer.view(region)[head : sink.got]
        sink.buf = memoryview(body)
        sink.got, sink.need = got, self.nbytes
        sink.room = self.nbytes  # nothing read ahead into memory
        sink.done = self._received
        self.region = None
        if self.credit is not None:
            self.credit.resize(self.nbytes)  # the claim's read-ahead part goes back

    def lost(self) -> None:
        """The connection is gone: a frame still arriving (or unread) is dropped."""
        if self.req is not None:
            req, self.req = self.req, None
            self.s.rt.producer.withdraw(req)  # counted abandoned; its credit goes back
            return
        if not self.receiving:
            return  # whole: it commits (or already did, or was refused)
        self.receiving = False
        p = self.s.rt.producer
        p.note_abandoned()
        if self.region is not None:
            region, self.region = self.region, None
            p.discard(region)
        if self.credit is not None:
            self.credit.release()


def _nothing() -> None:
    pass
