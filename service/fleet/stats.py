"""The front door's counters and values, as plain data for the metrics layer.

Messages by result (each message counts once, when it is resolved or
recognised): ``committed`` (into the ring), ``duplicate`` (already committed
or refused before: acked, not committed again), ``invalid`` (terminated, by
error code); and, across results, ``redelivered`` (deliveries JetStream made
more than once) and ``recovered`` (taken from the stream directly because
their delivery had not come: after a restart, or lost with a connection).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RESULTS", "STATES", "FleetCounters", "FleetStatistics"]

#: Every value ``FleetStatistics.state`` takes (a state-set gauge has one series each).
STATES = (
    "connecting",
    "connected",
    "disconnected",
    "closed",
    "stream_missing",
    "error",
    "stopped",
)
#: The keys of ``FleetStatistics.messages``.
RESULTS = ("committed", "duplicate", "invalid", "redelivered")


@dataclass(frozen=True, slots=True)
class FleetStatistics:
    node: str
    stream: str
    subjects: tuple[str, ...]
    mode: str
    #: One of :data:`STATES`.
    state: str
    connected: bool
    committed: int
    duplicate: int
    invalid: dict[str, int]
    redelivered: int
    recovered: int
    dead_lettered: int
    dead_letter_failures: int
    retries: dict[str, int]  # transient failures of a commit, by error code (retried)
    last_committed_seq: int
    last_resolved_seq: int
    #: Messages of the node's subjects not yet delivered (consumer info); None until known.
    pending: int | None
    #: Delivered and not yet acked (durable mode; consumer info).
    ack_pending: int | None
    #: ``pending`` and ``ack_pending`` by consumer (its durable name, in pins mode too).
    pending_by_consumer: dict[str, int]
    ack_pending_by_consumer: dict[str, int]
    held_messages: int
    held_bytes: int
    disconnects: int
    reconnects: int
    last_error: str | None

    @staticmethod
    def identity(node: str, stream: str, subjects: Sequence[str], mode: str) -> dict[str, Any]:
        """The fields that name the front door (for :meth:`FleetCounters.snapshot`)."""
        return {"node": node, "stream": stream, "subjects": tuple(subjects), "mode": mode}

    @property
    def messages(self) -> dict[str, int]:
        """Messages by result, the ``result`` label of a counter."""
        return {
            "committed": self.committed,
            "duplicate": self.duplicate,
            "invalid": sum(self.invalid.values()),
            "redelivered": self.redelivered,
        }


@dataclass
class FleetCounters:
    """Mutable counters the front door keeps (one event loop, no locking)."""

    committed: int = 0
    duplicate: int = 0
    invalid: Counter[str] = field(default_factory=Counter)
    redelivered: int = 0
    recovered: int = 0
    dead_lettered: int = 0
    dead_letter_failures: int = 0
    retries: Counter[str] = field(default_factory=Counter)
    last_committed_seq: int = 0
    pending: int | None = None
    ack_pending: int | None = None
    pending_by_consumer: dict[str, int] = field(default_factory=dict)
    ack_pending_by_consumer: dict[str, int] = field(default_factory=dict)

    def snapshot(
        self,
        identity: dict[str, Any],
        *,
        state: str,
        link: tuple[bool, int, int, str | None],
        last_resolved_seq: int,
        held: tuple[int, int],
    ) -> FleetStatistics:
        """These counters as :class:`FleetStatistics` (copies: later counts do not show).

        ``link``: connected, disconnects, reconnects, last error; ``held``:
        messages and bytes in hand.
        """
        connected, disconnects, reconnects, last_error = link
        return FleetStatistics(
            **identity,
            state=state,
            connected=connected,
            committed=self.committed,
            duplicate=self.duplicate,
            invalid=dict(self.invalid),
            redelivered=self.redelivered,
            recovered=self.recovered,
            dead_lettered=self.dead_lettered,
            dead_letter_failures=self.dead_letter_failures,
            retries=dict(self.retries),
            last_committed_seq=self.last_committed_seq,
            last_resolved_seq=last_resolved_seq,
            pending=self.pending,
            ack_pending=self.ack_pending,
            pending_by_consumer=dict(self.pending_by_consumer),
            ack_pending_by_consumer=dict(self.ack_pending_by_consumer),
            held_messages=held[0],
            held_bytes=held[1],
            disconnects=disconnects,
            reconnects=reconnects,
            last_error=last_error,
        )
