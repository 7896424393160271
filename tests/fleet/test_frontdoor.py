"""The front door in-process against a real nats-server and a real ring (no HTTP)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from ringbridge.kernel.pins import unpin

from ..service.conftest import Tally, eventually
from ..support.natsserver import NatsServer
from .conftest import Sender, cursor_pin, fleet_config, jetstream, make_stream, running_node

pytestmark = [pytest.mark.kernel, pytest.mark.nats]


async def test_batches_of_two_subjects_arrive_once_each_and_are_acked(
    nats_server: NatsServer, bpf_object_path: Path, pin_dir: Path
) -> None:
    async with jetstream(nats_server.url) as (_nc, js):
        await make_stream(js)
        sender = Sender(js)
        mine, other = Tally(), Tally()
        # Before the node exists: its new durables deliver from the stream's start.
        await sender.send("fleet.all", [(1, 10), (2, 20)], mine, other)
        await sender.send("fleet.node.n2", [(9, 99)], other)
        cfg = fleet_config(nats_server.url, ["fleet.all", "fleet.node.n1"])
        async with running_node(bpf_object_path, pin_dir, cfg) as node:
            for i in range(20):
                subject = "fleet.all" if i % 3 else "fleet.node.n1"
                await sender.send(subject, [(3, i), (4, 2 * i)], mine, binary=i % 2 == 0)
            last = sender.seqs[-1]
            await eventually(lambda: node.door.statistics().last_resolved_seq == last, what="all")
            st = node.door.statistics()
            assert st.committed == 21 and st.duplicate == 0 and st.invalid == {}
            assert node.cursor.seq == last and node.cursor.committed == last
            kc = node.counters()
            assert mine.matches(kc), mine.diff(kc)
            await eventually(
                lambda: (
                    node.door.statistics().ack_pending == 0 and node.door.statistics().pending == 0
                ),
                what="acks and pending in consumer info",
            )
        infos = {c.name: c for c in await js.consumers_info("FLEET")}
        assert set(infos) == {"n1-fleet_all", "n1-fleet_node_n1"}
        assert infos["n1-fleet_all"].config.filter_subject == "fleet.all"
        assert infos["n1-fleet_all"].num_ack_pending == 0


async def test_invalid_messages_are_terminated_counted_and_dead_lettered_and_the_stream_goes_on(
    nats_server: NatsServer, bpf_object_path: Path, pin_dir: Path
) -> None:
    async with jetstream(nats_server.url) as (_nc, js):
        await make_stream(js)
        await make_stream(js, "DEAD", ["dead.fleet"])
        sender = Sender(js)
        mine = Tally()
        cfg = fleet_config(nats_server.url, ["fleet.all"], dead_letter="dead.fleet")
        async with running_node(bpf_object_path, pin_dir, cfg) as node:
            await sender.send("fleet.all", [(1, 1)], mine)
            bad_sample = await js.publish(
                "fleet.all",
                b'{"samples": [{"kind": 1}, {"kind": 2, "value": -5}]}',
                headers={"Content-Type": "application/json", "X-Trace": "t-1"},
            )
            no_type = await js.publish("fleet.all", b"\x01\x02")
            bad_record = await js.publish(
                "fleet.all",
                b"\x08\0\0\0\x01\0\0\0" + bytes(8),
                headers={"Content-Type": "application/octet-stream"},
            )
            empty = await js.publish(
                "fleet.all", b'{"samples": []}', headers={"Content-Type": "application/json"}
            )
            await sender.send("fleet.all", [(2, 7), (2, 8)], mine, binary=True)
            last = sender.seqs[-1]
            await eventually(lambda: node.door.statistics().last_resolved_seq == last, what="all")
            st = node.door.statistics()
            assert st.committed == 2
            # The empty JSON batch is an invalid_sample, as over HTTP.
            assert st.invalid == {
                "invalid_sample": 2,
                "unsupported_media_type": 1,
                "invalid_batch": 1,
            }, st.invalid
            assert st.dead_lettered == 4 and st.dead_letter_failures == 0
            assert mine.matches(node.counters())
            assert node.cursor.committed == last
            await eventually(lambda: node.door.statistics().ack_pending == 0, what="acks")
        dead = await js.pull_subscribe("dead.fleet", durable="reader", stream="DEAD")
        msgs = await dead.fetch(4, timeout=5)
        by_seq = {int((m.headers or {})["Ringbridge-Stream-Seq"]): m for m in msgs}
        assert set(by_seq) == {bad_sample.seq, no_type.seq, bad_record.seq, empty.seq}
        m = by_seq[bad_sample.seq]
        h = m.headers or {}
        assert h["Ringbridge-Error-Code"] == "invalid_sample"
        assert h["Ringbridge-Error-Index"] == "1"
        assert "samples[1].value" in h["Ringbridge-Error"]
        assert h["X-Trace"] == "t-1"  # the message's own headers travel with it
        assert (h["Ringbridge-Node"], h["Ringbridge-Subject"]) == ("n1", "fleet.all")
        assert m.data == b'{"samples": [{"kind": 1}, {"kind": 2, "value": -5}]}'
        h = by_seq[no_type.seq].headers or {}
        assert h["Ringbridge-Error-Code"] == "unsupported_media_type"
        # Terminated, not left for redelivery: nothing of the node's stays pending.
        info = await js.consumer_info("FLEET", "n1")
        assert info.num_ack_pending == 0 and info.num_redelivered == 0


async def test_a_nats_server_restart_mid_stream_loses_nothing(
    nats_server: NatsServer, bpf_object_path: Path, pin_dir: Path
) -> None:
    mine = Tally()
    async with jetstream(nats_server.url) as (_nc, js):
        await make_stream(js)
        sender = Sender(js)
        cfg = fleet_config(nats_server.url, ["fleet.all"])
        async with running_node(bpf_object_path, pin_dir, cfg) as node:
            for i in range(30):
                await sender.send("fleet.all", [(5, i)], mine)
            await eventually(lambda: node.door.statistics().committed >= 10, what="some commits")
            nats_server.restart(down_for=0.5)
            await eventually(lambda: node.door.link.connected, timeout=20, what="reconnect")
            for i in range(30, 60):
                await sender.send("fleet.all", [(5, i)], mine)
            last = sender.seqs[-1]
            await eventually(
                lambda: node.door.statistics().last_resolved_seq == last, timeout=30, what="all"
            )
            st = node.door.statistics()
            assert st.disconnects >= 1 and st.reconnects >= 1
            assert st.committed + st.duplicate >= 60 and st.committed == 60
            assert mine.matches(node.counters()), mine.diff(node.counters())
            await eventually(
                lambda: node.door.statistics().ack_pending == 0, timeout=20, what="acks"
            )


async def test_a_full_ring_makes_the_node_lag_in_jetstream_not_in_memory_and_loses_nothing(
    nats_server: NatsServer, bpf_object_path: Path, pin_dir: Path
) -> None:
    mine = Tally()
    async with jetstream(nats_server.url) as (_nc, js):
        await make_stream(js)
        sender = Sender(js)
        cfg = fleet_config(nats_server.url, ["fleet.all"], max_inflight=4, commit_timeout=0.3)
        # 64 KiB ring, never drained until the end: 100 samples (2400 ring bytes) a batch.
        async with running_node(bpf_object_path, pin_dir, cfg, ring_size=64 * 1024) as node:
            for i in range(60):
                await sender.send("fleet.all", [(6, i)] * 100, mine, binary=True)
            await eventually(
                lambda: (node.door.statistics().pending or 0) > 20, what="pending to grow"
            )
            # The 28th waits for ring space, is retried, and is never given up.
            await eventually(
                lambda: node.door.statistics().retries.get("ring_full_timeout", 0) >= 2,
                what="commit attempts to time out",
            )
            st = node.door.statistics()
            assert st.committed == 27  # 27 * 2400 bytes fill the ring
            assert st.held_messages <= 4  # bounded in flight: the rest stays in JetStream
            assert st.pending is not None and st.pending >= 60 - 27 - 4
            assert node.ring.producer_pos == 27 * 2400
            # Drain as the kernel would: the node catches up, nothing lost, nothing twice.
            while node.door.statistics().last_resolved_seq < sender.seqs[-1]:
                await asyncio.to_thread(node.loaded.drain)
                await asyncio.sleep(0.05)
            assert mine.matches(node.counters())
            assert node.door.statistics().committed == 60


async def test_a_missing_stream_is_reported_and_taken_up_once_the_operator_makes_it(
    nats_server: NatsServer, bpf_object_path: Path, pin_dir: Path
) -> None:
    mine = Tally()
    cfg = fleet_config(nats_server.url, ["fleet.all"])
    async with (
        jetstream(nats_server.url) as (_nc, js),
        running_node(bpf_object_path, pin_dir, cfg) as node,
    ):
        await eventually(lambda: node.door.state == "stream_missing", what="stream_missing")
        # Connected to NATS, but with nothing to consume: degraded, and it says why.
        assert not node.door.healthy and node.door.statistics().connected
        await make_stream(js)
        sender = Sender(js)
        await sender.send("fleet.all", [(4, 44)], mine)
        await eventually(
            lambda: node.door.statistics().last_resolved_seq == 1, timeout=20, what="the message"
        )
        st = node.door.statistics()
        assert (st.state, st.connected) == ("connected", True)
        assert mine.matches(node.counters())


async def test_a_stream_made_again_restarts_the_nodes_cursor(
    nats_server: NatsServer, bpf_object_path: Path, pin_dir: Path
) -> None:
    mine = Tally()
    async with jetstream(nats_server.url) as (_nc, js):
        await make_stream(js)
        sender = Sender(js)
        for i in range(3):
            await sender.send("fleet.all", [(4, i)], mine)
        cfg = fleet_config(nats_server.url, ["fleet.all"])
        async with running_node(bpf_object_path, pin_dir, cfg) as node:
            await eventually(lambda: node.cursor.seq == 3, what="3 messages")
        await js.delete_stream("FLEET")
        await make_stream(js)  # sequences start at 1 again
        await sender.send("fleet.all", [(4, 100)], mine)
        async with running_node(bpf_object_path, pin_dir, cfg) as node:
            # Seq 1 of the new stream is new to the node, not a duplicate of the old seq 1.
            await eventually(lambda: node.door.statistics().committed == 1, what="the new seq 1")
            assert node.cursor.seq == 1
            assert mine.matches(node.counters())


async def test_a_node_that_lost_its_pins_resumes_from_its_durables_ack_floor(
    nats_server: NatsServer, bpf_object_path: Path, pin_dir: Path
) -> None:
    async with jetstream(nats_server.url) as (_nc, js):
        await make_stream(js)
        sender = Sender(js)
        for i in range(3):
            await sender.send("fleet.all", [(4, i)], Tally())
        cfg = fleet_config(nats_server.url, ["fleet.all"])
        async with running_node(bpf_object_path, pin_dir, cfg) as node:
            await eventually(
                lambda: node.door.statistics().ack_pending == 0 and node.cursor.seq == 3,
                what="3 acked",
            )
        unpin(pin_dir)  # a reboot: ring, counters and cursor are gone
        cursor_pin(pin_dir).unlink()
        fresh = Tally()
        await sender.send("fleet.all", [(4, 100)], fresh)
        async with running_node(bpf_object_path, pin_dir, cfg) as node:
            await eventually(lambda: node.cursor.seq == 4, what="the new message")
            st = node.door.statistics()
            # What JetStream had acked is recognised, not committed into the new ring again.
            assert (st.committed, st.duplicate) == (1, 3)
            assert fresh.matches(node.counters())
