"""Stream order for the fleet front door: which message is certainly the next one.

The cursor (:mod:`.cursor`) says "everything up to stream seq C is resolved",
which is only exactly-once if messages are resolved in stream order and none
is skipped: a message committed past a gap would make the gap's message look
like a duplicate when it finally arrives. JetStream does not hand a consumer
its messages in that order on its own:

- after a restart, the messages the previous process had fetched are
  redelivered only once their ack wait expires, while new ones are delivered
  at once;
- a delivery can be lost with a connection;
- nats-server 2.9 consumers filter on one subject, so a node on several
  subjects has one consumer each, and their deliveries interleave freely.

So the next message after C is taken only when it is *known* to be next.
Per source (subject) the sequencer keeps ``covered``: every message of that
subject with a seq in ``(C, covered]`` is held here (or resolved). Message
``s``, the lowest held, is next when every source is covered to ``s - 1``.
Coverage grows two ways:

- a chain of deliveries: consumer seqs count every delivery, so a *first*
  delivery whose consumer seq follows the previous delivery's is the subject's
  next message after it (a consumer delivers new messages in stream order);
- a question to the stream (asked by the front door, answered by
  :meth:`learn`): the first message of the subject after C
  (``STREAM.MSG.GET`` ``next_by_subj``, answered by the stream leader). If it
  is not held, its copy from the stream is taken instead of waiting for a
  redelivery (which then comes as a duplicate and is acked). "None" covers
  the subject up to the highest seq held when the question was sent.

No I/O here: the front door asks and delivers; this decides.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Ackable", "Delivery", "Idle", "Query", "Ready", "Sequencer", "Step"]


class Ackable(Protocol):
    """What the front door needs of a JetStream delivery (nats-py's ``Msg``)."""

    async def ack(self) -> None: ...
    async def term(self) -> None: ...
    async def in_progress(self) -> None: ...


@dataclass(eq=False, slots=True)
class Delivery:
    """One message as delivered by a consumer, or copied from the stream.

    ``consumer_seq`` 0 marks a copy (nothing to ack); ``delivered`` is how many
    times the consumer delivered it (1: first delivery).
    """

    source: int
    seq: int
    subject: str
    data: bytes
    headers: Mapping[str, str] | None
    consumer_seq: int = 0
    delivered: int = 1
    handle: Ackable | None = None
    held_since: float = 0.0

    @property
    def size(self) -> int:
        return len(self.data) + sum(len(k) + len(v) + 4 for k, v in (self.headers or {}).items())


@dataclass(frozen=True, slots=True)
class Ready:
    """Stream seq ``seq`` is next: resolve it (every delivery of it is in ``deliveries``)."""

    seq: int
    deliveries: tuple[Delivery, ...]


@dataclass(frozen=True, slots=True)
class Query:
    """Ask the stream for the first message after ``after`` on each of ``sources``."""

    sources: tuple[int, ...]
    after: int
    #: What a "none" answer covers: the highest seq held when the question is sent.
    upto: int


@dataclass(frozen=True, slots=True)
class Idle:
    """Nothing held: wait for deliveries."""


Step = Ready | Query | Idle


@dataclass(slots=True)
class _Chain:
    consumer_seq: int
    stream_seq: int


@dataclass
class Sequencer:
    """Held deliveries of ``nsources`` subjects, ordered for resolution after ``position``."""

    nsources: int
    position: int = 0
    _held: dict[int, list[Delivery]] = field(default_factory=dict)
    _covered: list[int] = field(default_factory=list)
    _tail: list[_Chain | None] = field(default_factory=list)
    held_bytes: int = 0
    #: Every subject is to be covered up to here even with nothing held (see catch_up).
    _probe: int = 0
    #: Per subject: what its durable's ack floor says was resolved already (see set_floor).
    _floor: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._covered = [self.position] * self.nsources
        self._tail = [None] * self.nsources
        self._floor = [0] * self.nsources

    @property
    def held_messages(self) -> int:
        return len(self._held)

    def held(self) -> Iterator[Delivery]:
        for ds in self._held.values():
            yield from ds

    def restart_source(self, source: int, first_seq: int) -> None:
        """A consumer of ``source`` was (re)made to deliver from ``first_seq`` on (<= position+1):
        its first delivery chains from there."""
        if first_seq > self.position + 1:
            raise ValueError(f"a consumer from {first_seq} would skip past {self.position + 1}")
        self._tail[source] = _Chain(0, first_seq - 1)

    def offer(self, d: Delivery) -> bool:
        """Takes a delivery; False when it is a duplicate (already resolved): ack and drop it."""
        if d.consumer_seq:
            self._extend_chain(d)
        if d.seq <= self.position:
            return False
        held = self._held.get(d.seq)
        if held is None:
            self._held[d.seq] = [d]
            self.held_bytes += d.size
        elif d.consumer_seq:
            held.append(d)  # another delivery of it (a redelivery): to be acked as well
        return True

    def _extend_chain(self, d: Delivery) -> None:
        i = d.source
        tail = self._tail[i]
        if tail is not None and d.consumer_seq == tail.consumer_seq + 1:
            if d.delivered == 1:
                # Nothing of this subject lies between the two: the consumer
                # delivers new messages in stream order, one consumer seq each.
                if self._covered[i] >= tail.stream_seq:
                    self._covered[i] = max(self._covered[i], d.seq)
                self._tail[i] = _Chain(d.consumer_seq, d.seq)
            else:
                # A redelivery takes a consumer seq but does not move the
                # consumer's place among new messages.
                self._tail[i] = _Chain(d.consumer_seq, tail.stream_seq)
        elif d.delivered == 1:
            self._tail[i] = _Chain(d.consumer_seq, d.seq)  # a chain starts, coverage unknown
        else:
            self._tail[i] = None

    def set_floor(self, source: int, floor: int) -> None:
        """Messages of ``source`` up to ``floor`` were acked, so resolved by this node before
        (its durable's ack floor): a node whose cursor was lost with its pins does not
        commit them again."""
        self._floor[source] = floor

    def below_floor(self, step: Ready) -> bool:
        """Whether ``step``'s message was resolved before, by its subject's ack floor."""
        return all(step.seq <= self._floor[d.source] for d in step.deliveries)

    def catch_up(self, to: int) -> None:
        """Messages up to ``to`` were delivered before (to a process now gone) and may be
        unresolved: take them from the stream now rather than wait for their redelivery."""
        self._probe = max(self._probe, to)

    def next_step(self) -> Step:
        if not self._held:
            if self._probe > self.position:
                need = tuple(i for i in range(self.nsources) if self._covered[i] < self._probe)
                if need:
                    return Query(need, self.position, self._probe)
            return Idle()
        s = min(self._held)
        need = tuple(i for i in range(self.nsources) if self._covered[i] < s - 1)
        if need:
            return Query(need, self.position, max(self._held))
        return Ready(s, tuple(self._held[s]))

    def learn(self, source: int, found: Delivery | None, upto: int) -> None:
        """The stream's answer to a :class:`Query` for ``source``: its first message after
        the position (a copy), or None (nothing up to ``upto``)."""
        if found is None:
            self._covered[source] = max(self._covered[source], upto)
            return
        if found.seq <= self.position:
            return
        self._covered[source] = max(self._covered[source], found.seq)
        self.offer(found)

    def resolved(self, seq: int) -> tuple[Delivery, ...]:
        """``seq`` is committed or refused for good: the position moves to it."""
        if seq <= self.position:
            raise ValueError(f"seq {seq} is not after the position {self.position}")
        if self._held and seq != min(self._held):
            raise ValueError(f"seq {seq} is not the lowest held ({min(self._held)})")
        ds = self._held.pop(seq, [])
        if ds:
            self.held_bytes -= ds[0].size
        self.position = seq
        return tuple(ds)
