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
from dataclasses import dataclass, field

__all__ = ["FleetCounters", "FleetStatistics"]


@dataclass(frozen=True, slots=True)
class FleetStatistics:
    node: str
    stream: str
    subjects: tuple[str, ...]
    mode: str
    #: connecting | connected | disconnected | closed | stream_missing | stopped
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
    held_messages: int
    held_bytes: int
    disconnects: int
    reconnects: int
    last_error: str | None

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
