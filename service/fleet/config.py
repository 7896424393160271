"""What the front door is configured with, and what it needs of the producer."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from ..producer.admission import Credit
from ..producer.contract import Batch, BeforeCommit
from ..wire import Ack, WaitFor
from .connect import Auth
from .decode import Limits
from .options import CursorMode
from .subjects import default_node_name

__all__ = ["Committer", "FleetConfig"]


class Committer(Protocol):
    """The producer's two calls the front door uses (``ringbridge.producer.task.Producer``)."""

    def admit(self, nbytes: int, timeout: float) -> Credit: ...

    async def submit(
        self,
        batch: Batch,
        credit: Credit,
        *,
        wait: WaitFor = "committed",
        gone: asyncio.Future[Any] | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> Ack: ...


@dataclass(frozen=True, slots=True)
class FleetConfig:
    auth: Auth
    stream: str
    subjects: tuple[str, ...]
    node: str
    limits: Limits
    mode: CursorMode = "durable"
    dead_letter: str | None = None
    max_inflight: int = 64
    max_inflight_bytes: int = 8 << 20
    ack_wait: float = 30.0
    receipts: str = "ringbridge_receipts"
    #: How long one pull request waits on the server for messages, s.
    pull_expires: float = 5.0
    #: How long one attempt to commit a message waits for ring space before it
    #: is tried again (the message is never given up for a full ring), s.
    commit_timeout: float = 5.0
    #: How often pending counts are read from consumer info, s.
    info_interval: float = 5.0
    #: How often a changed rollout receipt is written (pins mode), s.
    receipt_interval: float = 1.0

    @classmethod
    def from_settings(cls, s: Any) -> FleetConfig:
        """From a ``ringbridge.settings.Settings`` with ``nats`` set."""
        if not s.nats:
            raise ValueError("fleet delivery is off: no --nats URL")
        return cls(
            auth=Auth.from_settings(s),
            stream=s.nats_stream,
            subjects=tuple(s.nats_subject),
            node=s.nats_durable or default_node_name(),
            limits=Limits.of(s),
            mode=s.nats_cursor,
            dead_letter=s.nats_dead_letter,
            max_inflight=s.nats_max_inflight,
            max_inflight_bytes=s.nats_max_inflight_bytes,
            ack_wait=s.nats_ack_wait,
            receipts=s.nats_receipts,
        )
