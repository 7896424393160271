"""The fleet front door: JetStream messages -> the same admission and producer path as HTTP.

One task resolves messages strictly in stream order (:mod:`.sequencer`), one
at a time:

1. decode the message as one batch (:mod:`.decode`); invalid -> dead letter
   (optional), cursor, ``AckTerm``: it never blocks the stream;
2. take its admission credit from the front door's in-flight window (the
   service's budget, like a WebSocket frame's) and submit it to the producer
   with ``before_commit`` = the cursor's stamp (:mod:`.cursor`); a full ring
   or spent budget is retried -- the message waits, JetStream keeps the rest;
3. after the commit: the cursor moves, then the ack.

Pulling within bounded in-flight messages and bytes is :mod:`.intake`'s;
progress acks, pending counts and receipts :mod:`.upkeep`'s. Duplicates
(stream seq at or below the cursor) are acked without a commit.

The front door is independent of the HTTP app: it needs a producer
(``admit``/``submit``), the sample codec and limits, and a :class:`Cursor`
opened against the ring before the producer started.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable

from nats.aio.client import Client
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from ..errors import (
    ClientGoneError,
    ConfigError,
    KernelError,
    OverloadedError,
    RingbridgeError,
    RingClosedError,
    RingFullError,
    RingTimeoutError,
    StoppingError,
)
from ..producer.observe import Arrival
from ..schema import EncodedBatch, SampleCodec
from ..schema.payload import JSON
from ..wire import Ack
from .config import Committer, FleetConfig
from .connect import LinkState, connect, stream_created
from .cursor import Cursor, stream_identity
from .decode import decode_message
from .intake import Intake
from .outbox import dead_letter_counted
from .sequencer import Delivery, Idle, Query, Ready, Sequencer
from .source import PullSource
from .stats import FleetCounters, FleetStatistics
from .subjects import consumer_names
from .upkeep import quietly, upkeep

__all__ = ["FrontDoor"]

log = logging.getLogger("ringbridge.fleet")

_TRANSIENT = (RingTimeoutError, RingFullError, OverloadedError, KernelError)
_STOP = (StoppingError, RingClosedError, ClientGoneError)


class _Stopped(Exception):
    pass


class FrontDoor:
    """A node's durable (or pins-mode) JetStream consumer feeding its producer."""

    def __init__(
        self,
        cfg: FleetConfig,
        producer: Committer,
        codec: SampleCodec,
        cursor: Cursor,
        *,
        after_commit: Callable[[int], None] | None = None,
        on_ack: Callable[[Arrival, Ack], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self._producer = producer
        self._codec = codec
        self._cursor = cursor
        self._after_commit = after_commit
        self._on_ack = on_ack
        self.link = LinkState()
        self.link.listen(self._on_link)
        self._counters = FleetCounters(last_committed_seq=cursor.committed)
        self._state: str | None = None  # overrides the link's: stream_missing, error, stopped
        self._seq = Sequencer(len(cfg.subjects), cursor.seq)
        self._intake: Intake | None = None
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._give_up: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("front door already started")
        self._give_up = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name="ringbridge-fleet")

    async def stop(self, grace: float) -> None:
        """Finishes the message in hand (within ``grace``), acks what was committed, closes.

        Call before the producer stops. Idempotent.
        """
        task = self._task
        if task is None or task.done():
            self._state = "stopped"
            return
        self._stopping.set()
        self._wake.set()
        try:
            if self._intake is None:
                # Not consuming (connecting, or waiting for the stream): nothing
                # in hand to finish, and a connect may retry for ever.
                return
            await asyncio.wait_for(asyncio.shield(task), grace)
        except TimeoutError:
            if self._give_up is not None and not self._give_up.done():
                self._give_up.set_result(None)  # the submit in hand gives up, uncommitted
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 2.0)
        finally:
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            self._state = "stopped"

    @property
    def state(self) -> str:
        return self._state or self.link.state

    @property
    def healthy(self) -> bool:
        """Connected to NATS and consuming (what ``/readyz`` reports as not degraded)."""
        return self._state is None and self.link.connected

    async def _run(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                await self._session()
                backoff = 0.5
            except _Stopped:
                if not self._stopping.is_set():
                    log.warning("the producer stopped: the fleet front door stops consuming")
                break
            except asyncio.CancelledError:
                raise
            except ConfigError as exc:
                self._state = "error"
                self.link.last_error = exc.message
                log.error("fleet front door refused its consumer", extra={"error": exc.message})
                backoff = 30.0
            except Exception as exc:
                self.link.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("fleet session failed", extra={"error": self.link.last_error})
                backoff = min(backoff * 2, 10.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)

    # -- one connection ----------------------------------------------------------

    async def _session(self) -> None:
        cfg = self.cfg
        nc = await connect(cfg.auth, f"ringbridge {cfg.node}", self.link)
        intake: Intake | None = None
        watch: asyncio.Task[None] | None = None
        try:
            js = nc.jetstream()
            await self._bind_stream(nc)
            self._seq = Sequencer(len(cfg.subjects), self._cursor.seq)
            intake = Intake(
                cfg,
                self._seq,
                self._producer.admit(0, 1e9),
                self._counters,
                self.link,
                self._ensure,
                self._wake.set,
            )
            names = consumer_names(cfg.node, list(cfg.subjects))
            intake.sources = [
                PullSource(
                    i,
                    nc,
                    js,
                    stream=cfg.stream,
                    subject=s,
                    name=names[i],
                    node=cfg.node,
                    mode=cfg.mode,
                    ack_wait=cfg.ack_wait,
                    # Room for a full window beside what a dead process left
                    # unacked, so that new deliveries never wait for its ack wait.
                    max_ack_pending=2 * cfg.max_inflight,
                    on_delivery=intake.on_delivery,
                )
                for i, s in enumerate(cfg.subjects)
            ]
            self._intake = intake
            for src in intake.sources:
                await self._ensure(src)
            intake.start(nc.max_payload)
            watch = asyncio.create_task(
                upkeep(cfg, js, self._seq, intake.sources, self._cursor, self._counters)
            )
            await self._resolve_loop(nc, js, intake)
        finally:
            self._intake = None
            if watch is not None:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await watch
            if intake is not None:
                await intake.close()
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)
            with contextlib.suppress(Exception):
                await nc.close()

    async def _bind_stream(self, nc: Client) -> None:
        while True:
            created = await stream_created(nc, self.cfg.stream)
            if created is not None:
                break
            if self._state != "stream_missing":
                log.error(
                    "fleet stream does not exist: the operator creates it; waiting for it",
                    extra={"stream": self.cfg.stream},
                )
            self._state = "stream_missing"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 5.0)
            if self._stopping.is_set():
                raise _Stopped from None
        self._state = None
        if not self._cursor.bind_stream(stream_identity(self.cfg.stream, created)):
            self._counters.last_committed_seq = 0

    async def _ensure(self, src: PullSource) -> None:
        first = await src.ensure(self._cursor.seq)
        if first is not None:
            self._seq.restart_source(src.index, first)
            return
        info = await src.info()
        if info is not None and info.ack_floor:
            self._seq.set_floor(src.index, info.ack_floor.stream_seq)
        if info is not None and info.num_ack_pending and info.delivered:
            # Delivered to a process that is gone (or before a reconnect) and
            # not acked: JetStream redelivers them only after their ack wait.
            self._seq.catch_up(info.delivered.stream_seq)

    def _on_link(self, state: str) -> None:
        if state == "connected" and self._intake is not None:
            self._intake.reconnected()

    # -- resolving, in stream order ---------------------------------------------------

    async def _resolve_loop(self, nc: Client, js: JetStreamContext, intake: Intake) -> None:
        while not self._stopping.is_set():
            step = self._seq.next_step()
            if isinstance(step, Idle):
                self._wake.clear()
                await self._wake.wait()
            elif isinstance(step, Query):
                await self._query(js, step)
            elif isinstance(step, Ready):
                await self._resolve(nc, js, step)
                intake.room()

    async def _query(self, js: JetStreamContext, q: Query) -> None:
        for i in q.sources:
            subject = self.cfg.subjects[i]
            try:
                raw = await js.get_msg(self.cfg.stream, seq=q.after + 1, next=True, subject=subject)
            except NotFoundError:
                self._seq.learn(i, None, q.upto)
                continue
            copy = Delivery(
                source=i,
                seq=raw.seq or 0,
                subject=raw.subject or subject,
                data=raw.data or b"",
                headers=raw.headers,
                held_since=asyncio.get_running_loop().time(),
            )
            self._seq.learn(i, copy, q.upto)

    async def _resolve(self, nc: Client, js: JetStreamContext, step: Ready) -> None:
        first = step.deliveries[0]
        if self._seq.below_floor(step):
            # Acked before by this node (its pins, and the cursor, were lost since).
            self._counters.duplicate += 1
            self._cursor.terminated(step.seq)
            for d in self._seq.resolved(step.seq):
                if d.handle is not None:
                    await quietly(d.handle.ack())
            return
        taken = time.perf_counter()
        try:
            media, batch = await decode_message(
                self._codec, self.cfg.limits, first.headers, first.data
            )
            ack = await self._commit(step.seq, batch)
        except RingbridgeError as exc:
            status = exc.status_hint
            if status is None or not 400 <= status < 500 or isinstance(exc, ClientGoneError):
                raise
            await self._refuse(nc, js, step, exc)
            return
        self._counters.committed += 1
        self._counters.last_committed_seq = step.seq
        if all(d.consumer_seq == 0 for d in step.deliveries):
            self._counters.recovered += 1
        if self._on_ack is not None:
            # "Arrival" is when the message was taken up, in stream order.
            self._on_ack(Arrival(taken, "json" if media == JSON else "binary"), ack)
        if self._after_commit is not None:
            self._after_commit(step.seq)
        for d in self._seq.resolved(step.seq):
            if d.handle is not None:
                await quietly(d.handle.ack())

    async def _commit(self, seq: int, batch: EncodedBatch) -> Ack:
        loop = asyncio.get_running_loop()
        backoff = 0.05
        stamp = functools.partial(self._stamp, seq)
        while True:
            if self._stopping.is_set() and self._give_up is not None and self._give_up.done():
                raise _Stopped
            window = self._intake.window if self._intake is not None else None
            if window is None:
                raise _Stopped
            try:
                credit = window.split(batch.nbytes, loop.time() + self.cfg.commit_timeout)
            except OverloadedError as exc:
                self._counters.retries[exc.code] += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            except StoppingError:
                raise _Stopped from None
            try:
                ack = await self._producer.submit(
                    batch, credit, gone=self._give_up, before_commit=stamp
                )
            except _STOP:
                raise _Stopped from None
            except _TRANSIENT as exc:
                # Nothing of it was committed: the ring stayed full, or the
                # cursor could not be written. The same message again.
                self._counters.retries[exc.code] += 1
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue
            finally:
                credit.release()
            self._cursor.committed_now(seq)
            return ack

    def _stamp(self, seq: int, end_pos: int) -> None:
        try:
            self._cursor.stamp(seq, end_pos)
        except RingbridgeError:
            raise
        except Exception as exc:
            # Never let a bug here crash the producer task: fail this batch.
            raise RingbridgeError(f"fleet cursor stamp of stream seq {seq}: {exc!r}") from exc

    async def _refuse(
        self, nc: Client, js: JetStreamContext, step: Ready, exc: RingbridgeError
    ) -> None:
        first = step.deliveries[0]
        self._counters.invalid[exc.code] += 1
        log.warning(
            "invalid fleet message terminated",
            extra={
                "stream_seq": step.seq,
                "subject": first.subject,
                "code": exc.code,
                "error": exc.message,
            },
        )
        if self.cfg.dead_letter is not None:
            await dead_letter_counted(
                nc, js, self.cfg.dead_letter, first, self.cfg, exc, self._counters
            )
        self._cursor.terminated(step.seq)
        for d in self._seq.resolved(step.seq):
            if d.handle is not None:
                await quietly(d.handle.term())

    # -- introspection --------------------------------------------------------------------

    def statistics(self) -> FleetStatistics:
        cfg, link = self.cfg, self.link
        return self._counters.snapshot(
            FleetStatistics.identity(cfg.node, cfg.stream, cfg.subjects, cfg.mode),
            state=self.state,
            link=(link.connected, link.disconnects, link.reconnects, link.last_error),
            last_resolved_seq=self._cursor.seq,
            held=(self._seq.held_messages, self._seq.held_bytes),
        )
