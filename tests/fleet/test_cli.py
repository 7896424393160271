"""``ringbridge publish`` and ``ringbridge fleet status`` against a real nats-server and node."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ringbridge.core.ring import encode_batch

from ..service.conftest import Tally, eventually, sample
from ..support.launch import REPO
from ..support.natsserver import NatsServer
from .conftest import fleet_config, jetstream, make_stream, running_node

pytestmark = [pytest.mark.kernel, pytest.mark.nats]


async def ringbridge(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ringbridge", *args]
    return await asyncio.to_thread(
        subprocess.run, cmd, cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


async def test_publish_then_status_answers_whether_every_node_applied_a_message(
    nats_server: NatsServer, bpf_object_path: Path, pin_dir: Path, tmp_path: Path
) -> None:
    url = nats_server.url
    tally = Tally()
    lines = tmp_path / "samples.jsonl"
    lines.write_text("".join(f'{{"kind": 11, "value": {i}}}\n' for i in range(50)))
    tally.add_all((11, i) for i in range(50))
    records = tmp_path / "node.bin"
    records.write_bytes(encode_batch(sample(12, 100 + i) for i in range(30)))
    tally.add_all((12, 100 + i) for i in range(30))
    async with jetstream(url) as (_nc, js):
        await make_stream(js)
        out = await ringbridge(
            "publish",
            "--nats",
            url,
            "--subject",
            "fleet.all",
            str(lines),
            "--batch-samples",
            "10",
            "-q",
        )
        assert out.returncode == 0, out.stderr
        assert "published 50 samples in 5 batches" in out.stdout and "seqs 1..5" in out.stdout
        out = await ringbridge(
            "publish",
            "--nats",
            url,
            "--subject",
            "fleet.node.n1",
            str(records),
            "--batch-bytes",
            "256",
            "--window",
            "4",
            "-q",
        )
        assert out.returncode == 0, out.stderr
        assert "published 30 samples in 3 batches" in out.stdout  # 240-byte cuts
        cfg = fleet_config(url, ["fleet.all", "fleet.node.n1"])
        async with running_node(bpf_object_path, pin_dir, cfg) as node:
            await eventually(lambda: node.door.statistics().last_resolved_seq == 8, what="all")
            await eventually(lambda: node.door.statistics().ack_pending == 0, what="acks")
            kc = node.counters()
            assert tally.matches(kc), tally.diff(kc)
        status = await ringbridge(
            "fleet", "status", "--nats", url, "--stream", "FLEET", "--seq", "5"
        )
        assert status.returncode == 0, status.stdout + status.stderr
        assert "n1-fleet_all" in status.stdout and "applied by 1 of 1" in status.stdout
        # Published while the node is down: not applied yet, and status says so.
        ack = await js.publish(
            "fleet.all", b'{"samples":[{"kind":1}]}', headers={"Content-Type": "application/json"}
        )
        status = await ringbridge(
            "fleet", "status", "--nats", url, "--stream", "FLEET", "--seq", str(ack.seq), "--json"
        )
        assert status.returncode == 1
        doc = json.loads(status.stdout)
        by_name = {d["name"]: d for d in doc["durables"]}
        # A filtered consumer's ack floor passes over the other subjects' seqs (6..8).
        assert by_name["n1-fleet_all"]["acked"] == 8 and by_name["n1-fleet_all"]["pending"] == 1
        assert by_name["n1-fleet_node_n1"]["node"] == "n1"
        assert doc["seq"]["nodes"] == [{"who": "n1-fleet_all", "applied": False, "at": 8}]
        # The same node in pins mode: no durable needed, a receipt instead.
        pins = fleet_config(url, ["fleet.all", "fleet.node.n1"], mode="pins")
        async with running_node(bpf_object_path, pin_dir, pins) as node:
            await eventually(lambda: node.door.statistics().last_resolved_seq == ack.seq, what="it")
            assert node.door.statistics().committed == 1  # from the pinned seq on, not again
        status = await ringbridge(
            "fleet", "status", "--nats", url, "--stream", "FLEET", "--seq", str(ack.seq)
        )
        assert "receipts (ringbridge_receipts)" in status.stdout
        assert any(line.split()[:2] == ["n1", str(ack.seq)] for line in status.stdout.splitlines())
        missing = await ringbridge("fleet", "status", "--nats", url, "--stream", "NOPE")
        assert missing.returncode == 1 and "stream NOPE not found" in missing.stderr


async def test_publish_refuses_bad_input_before_connecting(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": 1}\n[1, 2]\n')
    out = await ringbridge("publish", "--nats", "nats://127.0.0.1:1", "--subject", "a.b", str(bad))
    assert out.returncode == 2 and "bad.jsonl:2: a sample must be a JSON object" in out.stderr
    out = await ringbridge("publish", "--subject", "a.b", str(bad))
    assert out.returncode == 2
