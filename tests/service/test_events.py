"""Bring your own program, for real objects: end to end, real kernel, child servers.

The object is tests/fixtures/upstream_style/user_ringbuf_proto.bpf.c, as a
user would leave it: no BTF anchor (its request and reply structs are only in
the header beside it), its maps without max_entries, drained from the
``tracepoint/syscalls/sys_enter_prctl`` program the *service* attaches, for
the process whose tgid is in its ``pid`` global (``--set-global pid=...``,
upstream's ``skel->bss->pid = getpid()``): this test process. Typed JSON goes
in; the kernel mutates its counter (read back from the pinned ``.bss``); the
replies it publishes into its ``BPF_MAP_TYPE_RINGBUF`` come out to WebSocket
and Server-Sent Events subscribers, typed, in order, exactly.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from ringbridge import AsyncClient, Client
from ringbridge.core.ring import encode_batch
from tests.support.byo import read_globals
from tests.support.launch import REPO, THIS_PYTHON, served, spawned
from tests.support.upstream import (
    INC32,
    INC64,
    MUL32,
    MUL64,
    OP_NAMES,
    PROTO_HEADER,
    PROTO_OBJ,
    SAMPLE_OBJ,
    Counter,
    clang_or_skip,
    ensure_built,
    getpgid,
    prctl,
    raw_msg,
)

pytestmark = pytest.mark.kernel

MAP = "kernel_ringbuf"
REPLY = struct.Struct("<QIiq")  # struct test_reply: u64 seq, enum op, s32 status, s64 value
U64 = (1 << 64) - 1


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    clang_or_skip()
    ensure_built()


@pytest.fixture(scope="module")
def types_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What a user ships where there is no clang: ``ringbridge types HEADER -o FILE``."""
    out = tmp_path_factory.mktemp("types") / "proto_types.bpf.o"
    done = subprocess.run(
        [*THIS_PYTHON, "types", str(PROTO_HEADER), "-o", str(out)],
        cwd=REPO, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "struct test_msg" in done.stdout and "struct test_reply" in done.stdout
    return out


def proto_args(
    pin_dir: Path, types: list[str], *extra: str, ring: str = "1M", kernel_ring: str = "1M"
) -> list[str]:
    return [
        "--bpf-object", str(PROTO_OBJ), "--pin-dir", str(pin_dir),
        "--ring-size", ring, "--map-size", f"{MAP}={kernel_ring}",
        *types, "--sample-type", "test_msg", "--event-map", f"{MAP}=test_reply",
        "--set-global", f"pid={os.getpid()}", *extra,
    ]  # fmt: skip


def requests(n: int, counter: Counter, rng: random.Random) -> tuple[list[Any], list[Any]]:
    """``n`` typed requests (enum by name, anonymous-union member by name) and the
    replies the kernel must publish for them (one op the enum does not name, raw)."""
    samples: list[Any] = []
    replies: list[Any] = []
    for i in range(n):
        op = rng.choice((INC64, INC32, MUL64, MUL32, INC64, INC32))
        if i == n // 2:
            op, operand = 9, 1
            samples.append({"data": base64.b64encode(raw_msg(op, operand)).decode()})
        elif op in (INC64, MUL64):
            operand = rng.randint(-(1 << 40), 1 << 40) if op == INC64 else rng.randint(-3, 3)
            samples.append({"msg_op": OP_NAMES[op], "operand_64": operand})
        else:
            operand = rng.randint(-(1 << 30), 1 << 30) if op == INC32 else rng.randint(-3, 3)
            samples.append({"msg_op": OP_NAMES[op], "operand_32": operand})
        replies.append(counter.apply(op, operand))
    return samples, replies


def ws_events(addr: str, *, fmt: str = "json", **kw: Any) -> ClientConnection:
    query = f"map={MAP}" + ("&format=binary" if fmt == "binary" else "")
    ws: ClientConnection = connect(
        f"ws://{addr}/v1/events?{query}", compression=None, ping_interval=None, **kw
    )
    return ws


def small_socket(addr: str) -> socket.socket:
    """A connection that takes little before TCP pushes back (no receive autotuning)."""
    host, port = addr.rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    return sock


def kernel_state(pin_dir: Path) -> dict[str, int]:
    return read_globals(PROTO_OBJ, pin_dir)


@pytest.mark.parametrize("source", ["--sample-header", "ringbridge types file"])
def test_upstream_object_typed_json_in_typed_replies_out(
    source: str, types_file: Path, pin_dir: Path, tmp_path: Path
) -> None:
    types = (
        ["--sample-header", str(PROTO_HEADER)]
        if source == "--sample-header"
        else ["--sample-btf", str(types_file)]
    )
    counter, rng = Counter(), random.Random(14)
    with served(proto_args(pin_dir, types), tmp_path / "serve.log") as addr:
        assert "program=test_user_ringbuf_protocol section=tracepoint/syscalls/sys_enter_prctl" in (
            (tmp_path / "serve.log").read_text()
        )
        assert kernel_state(pin_dir)["pid"] == os.getpid()  # --set-global, before the attach
        with (
            Client(f"http://{addr}") as c,
            c.events(MAP) as sse,
            ws_events(addr) as ws,
            ws_events(addr, fmt="binary") as wsb,
        ):
            want: list[Any] = []
            for batch in (40, 25):
                samples, replies = requests(batch, counter, rng)
                ack = c.send(samples)
                assert ack.accepted == batch
                # Committed, not drained: the program runs on the test's own prctl(2).
                assert kernel_state(pin_dir)["msgs_read"] == len(want)
                prctl()
                state = kernel_state(pin_dir)
                want += replies
                assert state["msgs_read"] == len(want)
                assert state["kern_mutated"] == counter.value & U64
                assert state["err"] == 0
            expected = [{"seq": i, "value": r} for i, r in enumerate(want)]
            assert [next(sse) for _ in want] == expected
            assert [json.loads(ws.recv(timeout=10)) for _ in want] == expected
            binary = [wsb.recv(timeout=10) for _ in want]
        before = expected[19]["value"]["kern_mutated"]
        assert expected[20]["value"] == {
            "seq": 21, "msg_op": 9, "status": -22, "kern_mutated": before
        }  # fmt: skip
        for i, (frame, r) in enumerate(zip(binary, want, strict=True)):
            assert isinstance(frame, bytes) and len(frame) == 8 + REPLY.size
            assert int.from_bytes(frame[:8], "little") == i
            seq, op, status, value = REPLY.unpack(frame[8:])
            op_name = OP_NAMES[op] if op < len(OP_NAMES) else op
            assert (seq, op_name, status, value) == (
                r["seq"],
                r["msg_op"],
                r["status"],
                r["kern_mutated"],
            )
        metrics = httpx.get(f"http://{addr}/metrics").text
    n = len(want)
    assert f'ringbridge_events_total{{map="{MAP}"}} {float(n)}' in metrics
    assert f'ringbridge_events_bytes_total{{map="{MAP}"}} {float(n * REPLY.size)}' in metrics
    assert f'ringbridge_events_lost_total{{map="{MAP}",reason="slow_subscriber"}} 0.0' in metrics
    assert f'ringbridge_events_lost_total{{map="{MAP}",reason="no_subscriber"}} 0.0' in metrics
    assert f'ringbridge_events_decode_errors_total{{map="{MAP}"}} 0.0' in metrics


def _read_into(out: list[Any], ws: ClientConnection, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            out.append(json.loads(ws.recv(timeout=0.5)))
        except TimeoutError:
            continue


def test_a_subscriber_that_stops_reading_gets_lost_while_another_misses_nothing(
    pin_dir: Path, tmp_path: Path
) -> None:
    # More than the server's socket may hold for a peer that reads nothing (loopback
    # grows the send buffer to tcp_wmem's 4 MiB): 60,000 events of ~110 bytes.
    n = 60_000
    args = proto_args(
        pin_dir, ["--sample-header", str(PROTO_HEADER)], "--event-buffer-events", "256",
        ring="2M", kernel_ring="4M",
    )  # fmt: skip
    counter = Counter()
    payloads = []
    for i in range(n):
        op = (INC64, MUL32)[i % 2]
        payloads.append(raw_msg(op, 3 if op == INC64 else -1))
        counter.apply(op, 3 if op == INC64 else -1)
    # The slow one reads nothing: its client stops taking frames after 4, its
    # socket's small receive buffer fills up, TCP pushes back on the server,
    # and the server's buffer of 256 events for it overflows.
    with (
        served(args, tmp_path / "serve.log") as addr,
        ws_events(addr, max_queue=4, sock=small_socket(addr)) as slow,
        ws_events(addr) as fast,
    ):
        stop = threading.Event()
        got: list[Any] = []
        reader = threading.Thread(target=_read_into, args=(got, fast, stop))
        reader.start()
        try:
            r = httpx.post(
                f"http://{addr}/v1/samples",
                content=encode_batch(payloads),
                headers={"content-type": "application/octet-stream"},
                timeout=30,
            )
            assert r.status_code == 200, r.text
            prctl()
            assert kernel_state(pin_dir)["msgs_read"] == n
            deadline = 60.0
            while len(got) < n and deadline > 0:
                stop.wait(0.1)
                deadline -= 0.1
        finally:
            stop.set()
            reader.join()
        # The fast one: every event, in order, exactly.
        assert [g["seq"] for g in got] == list(range(n))
        assert [g["value"]["seq"] for g in got] == list(range(1, n + 1))
        assert got[-1]["value"]["kern_mutated"] == counter.value
        assert not any("lost" in g for g in got)
        # The slow one, now read: a gap-free prefix, then one marker for the rest.
        items = []
        while True:
            items.append(json.loads(slow.recv(timeout=10)))
            if "lost" in items[-1]:
                break
        kept = items[:-1]
        assert [k["seq"] for k in kept] == list(range(len(kept)))
        assert items[-1] == {"lost": n - len(kept), "first_seq": len(kept), "last_seq": n - 1}
        assert 4 <= len(kept) < n
        metrics = httpx.get(f"http://{addr}/metrics").text
        stats = httpx.get(f"http://{addr}/v1/stats").json()["events"][MAP]
    lost = n - len(kept)
    slow_lost = f'ringbridge_events_lost_total{{map="{MAP}",reason="slow_subscriber"}}'
    assert f"{slow_lost} {float(lost)}" in metrics
    assert f'ringbridge_events_subscribers{{map="{MAP}"}} 2.0' in metrics
    assert stats["lost"] == {"slow_subscriber": lost, "no_subscriber": 0}
    assert stats["events"] == n and stats["reader"]["records"] == n


def test_a_tp_program_attached_by_the_service_drains_on_its_syscall(
    types_file: Path, pin_dir: Path, tmp_path: Path
) -> None:
    """``tp/syscalls/sys_enter_getpgid`` (the short section form), typed from the types file."""
    args = [
        "--bpf-object", str(SAMPLE_OBJ), "--pin-dir", str(pin_dir), "--ring-size", "64K",
        "--sample-btf", str(types_file), "--sample-type", "sample",
        "--set-global", f"pid={os.getpid()}",
    ]  # fmt: skip
    values = [5, -7, 1 << 40, 0, 11]
    with served(args, tmp_path / "serve.log") as addr:
        log = (tmp_path / "serve.log").read_text()
        assert "section=tp/syscalls/sys_enter_getpgid" in log
        samples = [
            {"pid": os.getpid(), "seq": i, "value": v, "comm": "ringbridge"}
            for i, v in enumerate(values)
        ]
        assert httpx.post(f"http://{addr}/v1/samples", json={"samples": samples}).is_success
        before = read_globals(SAMPLE_OBJ, pin_dir)
        assert before["read"] == 0  # nothing drains until the syscall
        getpgid()
        after = read_globals(SAMPLE_OBJ, pin_dir)
    assert after["read"] == len(values)
    assert after["value_sum"] == sum(values) & U64
    assert after["drain_status"] == len(values) and after["err"] == 0


def test_with_tracefs_unmounted_at_start_the_service_mounts_it(
    pin_dir: Path, tmp_path: Path
) -> None:
    """In a private mount namespace (the host's mounts are not touched): no tracefs, and
    no debugfs (libbpf would look there first); the service mounts tracefs itself."""
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to test the tracefs mount safely")
    serve = " ".join(
        [*THIS_PYTHON, "serve", "--port=0",
         *proto_args(pin_dir, ["--sample-header", str(PROTO_HEADER)])]
    )  # fmt: skip
    script = (
        "umount /sys/kernel/debug 2>/dev/null; umount /sys/kernel/tracing 2>/dev/null; "
        "if grep -q ' /sys/kernel/tracing tracefs ' /proc/self/mounts; then exit 9; fi; "
        f"exec {serve}"
    )
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RINGBRIDGE_")}
    with spawned(cmd, log, cwd=REPO, env=env, start_timeout=30) as (addr, _):
        text = log.read_text()
        assert "mounted tracefs for tracepoint programs" in text
        assert "section=tracepoint/syscalls/sys_enter_prctl" in text
        with Client(f"http://{addr}") as c, c.events(MAP) as replies:
            c.send([{"msg_op": "TEST_MSG_OP_INC64", "operand_64": 5},
                    {"msg_op": "TEST_MSG_OP_MUL64", "operand_64": 3}])  # fmt: skip
            prctl()
            got = [next(replies)["value"]["kern_mutated"] for _ in range(2)]
    assert got == [5, 15]


def test_a_ring_and_an_event_map_pinned_by_another_loader(
    types_file: Path, pin_dir: Path, tmp_path: Path
) -> None:
    """``--ring-pin`` + ``--event-pin PATH=TYPE``: another loader's object (loaded here, its
    programs attached), typed from the types file (the kernel's BTF for the ring, from
    the loader's programs, lacks test_msg and test_reply as much as the object does)."""
    from ringbridge.kernel import libbpf as lb
    from ringbridge.kernel.objplan import plan_object
    from ringbridge.kernel.userobj import load_object

    plan = plan_object(
        PROTO_OBJ, ring_size=1 << 16, map_sizes={MAP: 1 << 16}, set_globals={"pid": os.getpid()}
    )
    with load_object(plan, pin_dir) as loaded:
        assert loaded.attached == ["test_user_ringbuf_protocol"]
        with lb.obj_get(pin_dir / MAP) as fd:
            assert lb.map_info(fd).type == lb.BPF_MAP_TYPE_RINGBUF
        args = [
            "--ring-pin", str(pin_dir / "user_ringbuf"),
            "--event-pin", f"{pin_dir / MAP}=test_reply",
            "--sample-btf", str(types_file), "--sample-type", "test_msg",
        ]  # fmt: skip
        with (
            served(args, tmp_path / "serve.log") as addr,
            Client(f"http://{addr}") as c,
            c.events(MAP) as replies,
        ):
            c.send([{"msg_op": "TEST_MSG_OP_INC32", "operand_32": -4}])
            prctl()
            assert next(replies) == {
                "seq": 0,
                "value": {"seq": 1, "msg_op": "TEST_MSG_OP_INC32", "status": 0,
                          "kern_mutated": -4},
            }  # fmt: skip


def test_cli_events_async_client_and_the_end_of_the_stream(pin_dir: Path, tmp_path: Path) -> None:
    args = proto_args(pin_dir, ["--sample-header", str(PROTO_HEADER)])
    with contextlib.ExitStack() as outlive:
        with served(args, tmp_path / "serve.log") as addr:
            url = f"http://{addr}"
            cli = subprocess.Popen(
                [*THIS_PYTHON, "events", "--url", url, "--map", MAP, "--count", "2"],
                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip

            async def subscribe() -> list[Any]:
                async with AsyncClient(url) as ac, await ac.events(MAP) as events:
                    # Both subscribed (the CLI too) before the kernel publishes anything.
                    subs = f'ringbridge_events_subscribers{{map="{MAP}"}} 2.0'
                    async with httpx.AsyncClient() as h:
                        while subs not in (await h.get(url + "/metrics")).text:
                            await asyncio.sleep(0.05)
                    await ac.send([{"msg_op": "TEST_MSG_OP_INC64", "operand_64": 2},
                                   {"msg_op": "TEST_MSG_OP_MUL64", "operand_64": 21}])  # fmt: skip
                    await asyncio.to_thread(prctl)  # a thread of this process: its tgid
                    return [await anext(events) for _ in range(2)]

            got = asyncio.run(asyncio.wait_for(subscribe(), 30))
            out, err = cli.communicate(timeout=30)
            assert cli.returncode == 0, err
            # Subscribers still reading when the service stops: their streams just end
            # (SSE: the response ends; WebSocket: close 1012, service restart).
            c = outlive.enter_context(Client(url))
            events = outlive.enter_context(c.events(MAP))
            ended: list[BaseException | None] = []

            def read_to_the_end() -> None:
                try:
                    assert list(events) == []
                    ended.append(None)
                except BaseException as exc:  # the test asserts below
                    ended.append(exc)

            reader = threading.Thread(target=read_to_the_end)
            reader.start()
            ws = outlive.enter_context(ws_events(addr))
        reader.join(30)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert ended == [None]
    assert [g["value"]["kern_mutated"] for g in got] == [2, 42]
    assert [json.loads(line) for line in out.splitlines()] == got
