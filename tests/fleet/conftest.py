"""Fleet tests: a real nats-server (JetStream, temp store, loopback) and real rings.

Each test that needs a server starts its own (the ``nats_server`` fixture of
``tests/conftest.py``), so a test may restart or kill it. A :class:`Node` is
one ringbridge node in-process, without HTTP: the built-in BPF consumer
loaded and pinned, its ring, the producer task, the fleet cursor pinned
beside the pins, and the front door.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.js.api import StreamConfig
from nats.js.client import JetStreamContext

from ringbridge.fleet.config import FleetConfig
from ringbridge.fleet.connect import Auth
from ringbridge.fleet.cursor import Cursor, PinnedCursorStore
from ringbridge.fleet.decode import Limits
from ringbridge.fleet.frontdoor import FrontDoor
from ringbridge.kernel import libbpf as lb
from ringbridge.kernel.bpfobj import LoadedRingbridge, load_default
from ringbridge.kernel.counters import KernelCounters
from ringbridge.producer.task import Producer
from ringbridge.ring import EncodedBatch, UserRingBuffer
from ringbridge.schema import SampleCodec

from ..conftest import nats_binary_or_skip
from ..service.conftest import Tally, binary_batch

JSON_HEADERS = {"Content-Type": "application/json"}
BINARY_HEADERS = {"Content-Type": "application/octet-stream"}
RING = 256 * 1024

__all__ = ["nats_binary_or_skip"]


@asynccontextmanager
async def jetstream(url: str) -> AsyncIterator[tuple[Client, JetStreamContext]]:
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    try:
        yield nc, nc.jetstream()
    finally:
        await nc.close()


async def make_stream(
    js: JetStreamContext, name: str = "FLEET", subjects: Iterable[str] = ("fleet.>",)
) -> None:
    await js.add_stream(StreamConfig(name=name, subjects=list(subjects)))


def json_body(samples: Iterable[tuple[int, int]]) -> bytes:
    return json.dumps({"samples": [{"kind": k, "value": v} for k, v in samples]}).encode()


#: A validated batch as the producer takes it.
Batch = EncodedBatch


@dataclass
class Sender:
    """Publishes batches and tallies what each node must end up with."""

    js: JetStreamContext
    seqs: list[int] = field(default_factory=list)

    async def send(
        self, subject: str, samples: list[tuple[int, int]], *tallies: Tally, binary: bool = False
    ) -> int:
        body = binary_batch(samples) if binary else json_body(samples)
        headers = dict(BINARY_HEADERS if binary else JSON_HEADERS)
        # A retry after a timeout (the server restarting) is deduplicated by
        # JetStream on the message id: one message stored, however many sends.
        headers["Nats-Msg-Id"] = f"test-{uuid.uuid4().hex}"
        for attempt in range(20):
            try:
                ack = await self.js.publish(subject, body, headers=headers, timeout=2)
                break
            except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
                if attempt == 19:
                    raise
                await asyncio.sleep(0.5)
        for t in tallies:
            t.add_all(samples)
        self.seqs.append(ack.seq)
        return int(ack.seq)


@dataclass
class Node:
    """One node in-process: pins, ring, producer, cursor, front door."""

    pin_dir: Path
    loaded: LoadedRingbridge
    ring: UserRingBuffer
    producer: Producer
    store: PinnedCursorStore
    cursor: Cursor
    door: FrontDoor

    def counters(self) -> KernelCounters:
        self.loaded.drain()
        return self.loaded.read_counters()

    async def stop(self) -> None:
        await self.door.stop(5)
        await self.producer.stop(1)
        self.ring.close()
        self.store.close()
        self.loaded.close()


def cursor_pin(pin_dir: Path) -> Path:
    # Beside the pin dir: the built-in set's dir holds exactly its own pins.
    return pin_dir.parent / "fleet" / "cursor"


def fleet_config(url: str, subjects: Iterable[str], **overrides: Any) -> FleetConfig:
    cfg = FleetConfig(
        auth=Auth(servers=(url,)),
        stream="FLEET",
        subjects=tuple(subjects),
        node="n1",
        limits=Limits(RING, 4096, 64 * 1024),
        ack_wait=5.0,
        pull_expires=1.0,
        info_interval=0.2,
        receipt_interval=0.1,
    )
    return replace(cfg, **overrides)


@asynccontextmanager
async def running_node(
    bpf_object_path: Path,
    pin_dir: Path,
    cfg: FleetConfig,
    *,
    ring_size: int = RING,
    after_commit: Any = None,
    admission_bytes: int = 16 << 20,
) -> AsyncIterator[Node]:
    loaded = load_default(bpf_object_path, pin_dir, ring_size)
    loaded.disarm_timer()
    ring = UserRingBuffer(loaded.ring_fd, waiting_flag_fd=loaded.ctl_fd)
    store = PinnedCursorStore.open(cursor_pin(pin_dir))
    # Resolved before the producer may commit anything (see fleet.cursor).
    cursor = Cursor.open(store, lb.map_info(loaded.ring_fd).id, ring.producer_pos)
    producer = Producer(ring, admission_bytes=admission_bytes, seq_store=loaded)
    producer.start()
    codec = SampleCodec.from_object(bpf_object_path)
    door = FrontDoor(cfg, producer, codec, cursor, after_commit=after_commit)
    node = Node(pin_dir, loaded, ring, producer, store, cursor, door)
    door.start()
    try:
        yield node
    finally:
        await node.stop()


def env_flag(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")
