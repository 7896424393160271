"""Exactly once across a kill -9: the stream-seq rule on the real kernel.

A node process kills itself with SIGKILL at the two points that matter
(see ringbridge.fleet.cursor): after the cursor record of a commit and before
the ring's producer_pos is published (the commit did not happen: the restart
must commit the message), and after the commit before the ack (it did: the
redelivery must be recognised by its stream seq, acked and not committed
again). In both cases the kernel's per-kind counts and sums must equal what
was published, exactly.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ringbridge.fleet.cursor import CursorRecord, PinnedCursorStore
from ringbridge.kernel import libbpf as lb
from ringbridge.kernel.bpfobj import load_default

from ..service.conftest import Tally
from ..support.launch import REPO
from ..support.natsserver import NatsServer
from .conftest import RING, Sender, cursor_pin, jetstream, make_stream

pytestmark = [pytest.mark.kernel, pytest.mark.nats]


def run_node(
    url: str, pin_dir: Path, obj: Path, subjects: list[str], *extra: str
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tests.fleet.crashnode", url, str(pin_dir), str(obj), *subjects]
    return subprocess.run(
        [*cmd, *extra], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )


def stats(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def record(pin_dir: Path) -> CursorRecord | None:
    store = PinnedCursorStore.open(cursor_pin(pin_dir))
    try:
        return store.load_cursor()
    finally:
        store.close()


async def publish(
    url: str, subjects: list[str], n: int, *, stream: bool = True, first: int = 0
) -> tuple[Tally, list[int]]:
    tally = Tally()
    async with jetstream(url) as (_nc, js):
        if stream:
            await make_stream(js)
        sender = Sender(js)
        for i in range(first, first + n):
            await sender.send(subjects[i % len(subjects)], [(7, i), (8, 1000 + i)], tally)
    return tally, sender.seqs


@pytest.mark.parametrize("mode", ["durable", "pins"])
async def test_kill_9_after_the_commit_before_the_ack_does_not_commit_twice(
    nats_server: NatsServer, bpf_object_path: Path, pin_dir: Path, mode: str
) -> None:
    subjects = ["fleet.all", "fleet.node.n1"]
    tally, seqs = await publish(nats_server.url, subjects, 12)
    crash = seqs[4]
    # A long ack wait: what the dead process held is redelivered well after
    # the restarted node got the messages published meanwhile.
    first = run_node(
        nats_server.url,
        pin_dir,
        bpf_object_path,
        subjects,
        "--mode",
        mode,
        "--crash",
        f"after-commit:{crash}",
        "--ack-wait",
        "10",
    )
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    rec = record(pin_dir)
    assert rec is not None and rec.seq == crash and rec.end_pos > 0
    with load_default(bpf_object_path, pin_dir, RING) as loaded:
        # The commit happened: producer_pos reached what the record announced.
        assert lb.map_info(loaded.ring_fd).id == rec.ring_id
        assert loaded_ring_pos(loaded) >= rec.end_pos
    # More arrive while the node is down: the restarted node gets these new
    # ones first, while the ones the dead process held are still waiting out
    # their ack wait in JetStream.
    more, more_seqs = await publish(nats_server.url, subjects, 4, stream=False, first=12)
    second = stats(run_node(nats_server.url, pin_dir, bpf_object_path, subjects, "--mode", mode))
    assert second["committed"] == 16 - 5  # the 5th is not committed again
    assert second["last_resolved_seq"] == more_seqs[-1]
    if mode == "durable":
        # What the dead process held was taken from the stream in order
        # (not skipped for the newer deliveries); the redeliveries came
        # back later and were recognised: acked, not committed.
        assert second["recovered"] >= 1
        assert second["duplicate"] >= 1 and second["ack_pending"] == 0
        async with jetstream(nats_server.url) as (_nc, js):
            for name in ("n1-fleet_all", "n1-fleet_node_n1"):
                info = await js.consumer_info("FLEET", name)
                assert info.num_ack_pending == 0 and info.num_pending == 0
    else:
        # No per-node state in JetStream: only the receipt.
        async with jetstream(nats_server.url) as (_nc, js):
            assert await js.consumers_info("FLEET") == [] or all(
                not c.config.durable_name for c in await js.consumers_info("FLEET")
            )
            entry = await (await js.key_value("ringbridge_receipts")).get("n1")
            assert entry.value is not None
            receipt = json.loads(entry.value)
            assert (receipt["seq"], receipt["committed"]) == (more_seqs[-1], more_seqs[-1])
    tally.count.update(more.count)
    tally.value.update(more.value)
    with load_default(bpf_object_path, pin_dir, RING) as loaded:
        loaded.drain()
        kc = loaded.read_counters()
    assert tally.matches(kc), tally.diff(kc)


async def test_kill_9_after_the_cursor_record_before_the_publish_commits_it_on_restart(
    nats_server: NatsServer, bpf_object_path: Path, pin_dir: Path
) -> None:
    subjects = ["fleet.all"]
    tally, seqs = await publish(nats_server.url, subjects, 8)
    crash = seqs[3]
    first = run_node(
        nats_server.url, pin_dir, bpf_object_path, subjects, "--crash", f"after-stamp:{crash}"
    )
    assert first.returncode == -signal.SIGKILL, first.stderr[-3000:]
    rec = record(pin_dir)
    assert rec is not None and (rec.seq, rec.prev_seq) == (crash, seqs[2])
    with load_default(bpf_object_path, pin_dir, RING) as loaded:
        pos = loaded_ring_pos(loaded)
    assert pos < rec.end_pos  # the record announced a commit the ring never got
    second = stats(run_node(nats_server.url, pin_dir, bpf_object_path, subjects))
    assert second["committed"] == 8 - 3  # the 4th is committed now, once
    with load_default(bpf_object_path, pin_dir, RING) as loaded:
        loaded.drain()
        kc = loaded.read_counters()
    assert tally.matches(kc), tally.diff(kc)


def loaded_ring_pos(loaded: Any) -> int:
    from ringbridge.ring import UserRingBuffer

    with UserRingBuffer(loaded.ring_fd, recover=False) as ring:
        return int(ring.producer_pos)
