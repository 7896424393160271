"""Fleet delivery through real ``ringbridge serve`` processes, each on its own pins.

A real nats-server (JetStream, temp store, loopback) and one ``serve --nats``
process per node; every node is checked the way an operator would
(``/v1/stats``, ``/metrics``) and, at the end, in its kernel: the per-kind
counts and value sums equal exactly what was sent to it (no loss, no
duplicates) -- through a kill -9 of a node mid-stream, a kill -9 between a
commit and its ack, a nats-server restart, a full ring, invalid messages, and
the stream's leader killed in the recommended three-server cluster.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import nats
import pytest
from nats.js.api import StreamConfig

from ringbridge.kernel.bpfobj import load_default
from tests.support.byo import EXAMPLE_OBJ, ensure_built, read_globals

from ..service.conftest import Tally
from ..support.launch import REPO
from ..support.natsserver import NatsServer, running_cluster
from .conftest import jetstream, nats_binary_or_skip
from .nodes import FleetNode, publish, send, until

pytestmark = [pytest.mark.kernel, pytest.mark.nats]

RING = "256K"
#: Messages that every node refuses, with the code each is counted under.
_JSON = {"Content-Type": "application/json"}
INVALID = [
    (b'{"samples": [', _JSON, "malformed_json"),
    (b'{"samples": [{"kind": 1}]}', {}, "unsupported_media_type"),
    (b'{"samples": [{"kind": "x", "value": 1}]}', _JSON, "invalid_sample"),
]


async def make_streams(url: str) -> None:
    async with jetstream(url) as (_nc, js):
        await js.add_stream(StreamConfig(name="FLEET", subjects=["fleet.>"]))
        await js.add_stream(StreamConfig(name="DLQ", subjects=["dlq.>"]))


def degraded(node: FleetNode) -> bool:
    r = httpx.get(f"{node.proc.url}/readyz", timeout=10)
    body = r.json()
    return bool(r.status_code == 200 and body["status"] == "degraded"
                and body["degraded"] == ["nats_connected"])  # fmt: skip


def fleet_status(url: str, seq: int) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ringbridge", "fleet", "status", "--nats", url]
    return subprocess.run(
        [*cmd, "--stream", "FLEET", "--seq", str(seq)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_three_nodes_get_exactly_their_batches_through_a_kill_9_and_a_nats_restart(
    nats_server: NatsServer, pin_dir: Path, tmp_path: Path
) -> None:
    url = nats_server.url
    await make_streams(url)
    root = pin_dir.parent
    nodes = [
        FleetNode.make(
            f"n{i}",
            root / f"n{i}",
            tmp_path,
            url,
            ["fleet.all", f"fleet.node.n{i}"],
            *("--ring-size", RING, "--drain", "kick"),
            mode="pins" if i == 3 else "durable",
            nats_dead_letter=f"dlq.n{i}",
        )
        for i in (1, 2, 3)
    ]
    n1, n2, n3 = nodes
    for n in nodes:
        n.proc.start(wait=False)
    try:
        for n in nodes:
            n.proc.wait_ready()
        async with jetstream(url) as (_nc, js):
            for i in range(60):
                await send(js, "fleet.all", [(1, i), (2 + i % 3, 7 * i)], nodes)
                if i % 4 == 0:
                    await send(js, "fleet.node.n2", [(9, i)], [n2])
                if i % 20 == 5:
                    body, headers, _code = INVALID[i // 20]
                    seq = await publish(js, "fleet.all", body, headers)
                    for n in nodes:
                        n.seqs.append(seq)
                if i == 20:
                    # Mid-stream, whatever it holds: committed, acked or neither.
                    assert n2.proc.kill() == -signal.SIGKILL
                if i == 30:
                    n2.proc.start()
                if i == 40:
                    nats_server.stop()
                    # NATS away: the node serves HTTP anyway, ready but degraded.
                    await until(lambda: degraded(n1), 15, "/readyz degraded", n1.explain)
                    assert "ringbridge_nats_connected 0.0" in n1.metrics()
                    nats_server.start()
        for n in nodes:
            await until(n.done, 60, f"{n.name}: all resolved, its kernel exact", n.explain)
        # The kernel holds exactly what was sent to each node.
        assert n2.tally.count[9] == 15 and n1.tally.count[9] == 0
        for n in (n1, n3):
            st = n.fleet()
            assert st["invalid"] == {code: 1 for _b, _h, code in INVALID}, n.name
            assert st["dead_lettered"] == 3 and st["duplicate"] == 0, n.name
            assert st["committed"] == 60, n.name
            assert st["disconnects"] >= 1 and st["state"] == "connected", n.name
        async with jetstream(url) as (_nc, js):
            info = await js.stream_info("DLQ", subjects_filter="dlq.>")
            subjects = info.state.subjects or {}
            assert (subjects["dlq.n1"], subjects["dlq.n3"]) == (3, 3)
            assert subjects["dlq.n2"] >= 3  # killed mid-stream: each at least once
        # The control plane's check: every node the last message is for applied it.
        last = max(n1.seqs)
        await until(lambda: fleet_status(url, last).returncode == 0, 30, "fleet status --seq")
        out = fleet_status(url, last).stdout
        assert "applied by 3 of 3" in out, out
    finally:
        for n in nodes:
            n.proc.stop()


@pytest.mark.parametrize(
    ("point", "mode"),
    [("after-commit", "durable"), ("after-commit", "pins"), ("after-stamp", "durable")],
)
async def test_a_serve_process_killed_at_a_message_commits_it_exactly_once(
    nats_server: NatsServer, pin_dir: Path, tmp_path: Path, point: str, mode: str
) -> None:
    url = nats_server.url
    await make_streams(url)
    async with jetstream(url) as (_nc, js):
        seqs = []
        for i in range(12):
            seqs.append(await send(js, "fleet.all", [(5, i), (6, 100 + i)], []))
    crash = seqs[4]
    tally = Tally()
    for i in range(12):
        tally.add_all([(5, i), (6, 100 + i)])
    wrapper = (sys.executable, "-m", "tests.fleet.crashserve", f"{point}:{crash}")
    args = ("--ring-size", RING, "--drain", "kick")
    dying = FleetNode.make("n1", pin_dir, tmp_path, url, ["fleet.all"], *args, mode=mode,
                           command=wrapper)  # fmt: skip
    dying.proc.start(wait=False)
    try:
        assert dying.proc.wait_exit(60) == -signal.SIGKILL, dying.proc.log()[-3000:]
    finally:
        dying.proc.stop()
    node = FleetNode.make("n1", pin_dir, tmp_path, url, ["fleet.all"], *args, mode=mode)
    node.tally = tally
    node.seqs = seqs
    node.proc.start()
    try:
        await until(node.done, 60, "every message resolved, the kernel exact", node.explain)
        st = node.fleet()
        if point == "after-commit":
            # The 5th was committed by the dead process: recognised, not committed again.
            assert st["committed"] == 12 - 5
            if mode == "durable":
                await until(lambda: node.fleet()["duplicate"] >= 1, 30, "the redelivery acked")
        else:
            # The record announced a commit the ring never got: committed now, once.
            assert st["committed"] == 12 - 4
        assert node.stats()["producer"]["batches_committed"] == st["committed"]
    finally:
        node.proc.stop()


async def test_a_full_ring_makes_one_node_lag_while_the_other_keeps_up_and_nothing_is_lost(
    nats_server: NatsServer, pin_dir: Path, tmp_path: Path, bpf_object_path: Path
) -> None:
    url = nats_server.url
    await make_streams(url)
    root = pin_dir.parent
    # slow: nothing drains its ring (external drain, no program) until the test does.
    slow = FleetNode.make("slow", root / "slow", tmp_path, url, ["fleet.all"],
                          "--ring-size", "16K", "--drain", "external",
                          nats_max_inflight=4)  # fmt: skip
    fast = FleetNode.make("fast", root / "fast", tmp_path, url, ["fleet.all"],
                          "--ring-size", RING, "--drain", "kick")  # fmt: skip
    for n in (slow, fast):
        n.proc.start(wait=False)
    try:
        for n in (slow, fast):
            n.proc.wait_ready()
        async with jetstream(url) as (_nc, js):
            for i in range(60):
                await send(js, "fleet.all", [(1 + i % 4, i)] * 20, [slow, fast])

        def lagging() -> bool:
            s, f = slow.fleet(), fast.fleet()
            return bool(
                f["last_resolved_seq"] == 60
                and (s["pending"] or 0) > 10
                and s["last_committed_seq"] < 60
                and f["pending"] == 0
            )

        await until(lagging, 30, "the slow node lagging in JetStream, the fast one not")
        assert fast.done()
        s = slow.fleet()
        assert s["held_messages"] <= 4  # bounded in-flight window, the rest in JetStream
        pending = [
            line
            for line in slow.metrics().splitlines()
            if line.startswith("ringbridge_nats_consumer_pending_messages{")
        ]
        assert len(pending) == 1 and float(pending[0].split()[-1]) > 10, pending
        # The slow node's consumer drains at last: it catches up, losing nothing.
        with load_default(bpf_object_path, slow.pin_dir, 16 * 1024) as loaded:

            def drained() -> bool:
                loaded.drain()
                return slow.done()

            await until(drained, 60, "the slow node caught up")
        await until(lambda: slow.fleet()["pending"] == 0, 15, "pending back to 0")
    finally:
        for n in (slow, fast):
            n.proc.stop()


async def test_a_users_object_and_a_ring_pin_node_get_exactly_their_batches_through_a_kill_9(
    nats_server: NatsServer, pin_dir: Path, tmp_path: Path, bpf_object_path: Path
) -> None:
    ensure_built()
    url = nats_server.url
    await make_streams(url)
    root = pin_dir.parent
    ops = FleetNode.make(
        "ops", root / "ops", tmp_path, url, ["fleet.ops", "fleet.node.ops"],
        "--bpf-object", str(EXAMPLE_OBJ), "--ring-size", "64K", "--map-size", "slots=64",
        "--sample-type", "ops_msg", "--drain", "kick", "--drain-program", "ops_drain",
    )  # fmt: skip
    # Another loader's ring: the built-in consumer pinned elsewhere, draining on
    # its own timer; the node feeds it with --ring-pin and keeps its cursor in
    # its own --pin-dir.
    other = load_default(bpf_object_path, root / "other", 64 * 1024)
    other.arm_timer(1_000_000, 4096)
    pinned = FleetNode.make(
        "pinned", root / "pinned-state", tmp_path, url, ["fleet.all"],
        "--ring-pin", str(root / "other" / "ringbridge_ring"),
        "--sample-type", "ringbridge_sample",
    )  # fmt: skip
    adds: list[int] = []
    for n in (ops, pinned):
        n.proc.start(wait=False)
    try:
        for n in (ops, pinned):
            n.proc.wait_ready()
        async with jetstream(url) as (_nc, js):
            for i in range(40):
                batch = [3 * i + 1, -i]
                subject = "fleet.node.ops" if i % 5 == 0 else "fleet.ops"
                body = {"samples": [{"op": "OPS_ADD", "add": a} for a in batch]}
                ops.seqs.append(await publish(js, subject, json.dumps(body).encode()))
                adds += batch
                await send(js, "fleet.all", [(4, i), (5, 1)], [pinned])
                if i == 12:
                    assert ops.proc.kill() == -signal.SIGKILL
                    assert pinned.proc.kill() == -signal.SIGKILL
                if i == 18:
                    ops.proc.start()
                    pinned.proc.start()

        def ops_done() -> bool:
            resolved = ops.fleet()["last_resolved_seq"] >= max(ops.seqs)
            g = read_globals(EXAMPLE_OBJ, ops.pin_dir)
            return resolved and (g["acc"], g["ops_applied"]) == (1 + sum(adds), len(adds))

        await until(ops_done, 60, "the object's node: every add applied exactly once")
        g = read_globals(EXAMPLE_OBJ, ops.pin_dir)
        assert g["ops_rejected"] == 0
        assert (ops.pin_dir / "ringbridge_fleet_cursor").exists()

        def pinned_done() -> bool:
            resolved = pinned.fleet()["last_resolved_seq"] >= max(pinned.seqs)
            return resolved and pinned.tally.matches(other.read_counters())

        await until(pinned_done, 60, "the ring-pin node: every batch once in the other's ring")
        assert (pinned.pin_dir / "ringbridge_fleet_cursor").exists()
    finally:
        for n in (ops, pinned):
            n.proc.stop()
        other.disarm_timer()
        other.close()


async def test_the_recommended_cluster_loses_nothing_when_the_streams_leader_is_killed(
    pin_dir: Path, tmp_path: Path
) -> None:
    # README's deployment: three servers in one JetStream cluster, the stream
    # replicated three times; the node lists every server.
    with running_cluster(tmp_path / "cluster", nats_binary_or_skip()) as cluster:
        urls = ",".join(cluster.urls)
        nc = await nats.connect(cluster.urls)
        try:
            js = nc.jetstream()
            for attempt in range(40):
                try:
                    await js.add_stream(
                        StreamConfig(name="FLEET", subjects=["fleet.>"], num_replicas=3)
                    )
                    break
                except nats.errors.Error:  # the meta leader not elected yet
                    if attempt == 39:
                        raise
                    await asyncio.sleep(0.25)
            node = FleetNode.make("c1", pin_dir, tmp_path, urls, ["fleet.all"], "--drain", "kick")
            node.proc.start()
            try:
                for i in range(40):
                    await send(js, "fleet.all", [(5, i), (6, 2 * i)], [node])
                    if i == 15:
                        cluster_info = (await js.stream_info("FLEET")).cluster
                        assert cluster_info is not None and cluster_info.leader is not None
                        killed = int(cluster_info.leader.rsplit("-", 1)[1])
                        cluster.kill(killed)
                    if i == 30:
                        cluster.start(killed)
                await until(node.done, 60, "every batch once in the kernel", node.explain)
                assert node.fleet()["committed"] == 40
            finally:
                node.proc.stop()
        finally:
            await nc.close()
