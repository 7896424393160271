"""Binary frames read ahead into the ring space of the frame before them (#15).

Frames that wait in the socket behind a binary frame come in with its
payload, in one read, into ring space claimed with it; each whole frame of
the 8-byte-header shape is unmasked and validated where it lies, its header
made an empty DISCARD record (api/dataplane/readahead.py). Everything else
is handed back to the general path. The kernel is the oracle: it must count
exactly the samples acknowledged, never fail a drain, and consume the ring
to its end; acks come one per frame, in order, with contiguous seqs.

Each test queues its frames in the server's socket while the stream is not
reading (paused from the test), so that the read-ahead sees them all at
once -- the case it exists for -- whatever the scheduling.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from collections import deque
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode

from ringbridge.api.dataplane.stream import Stream
from ringbridge.core.ring import encode_batch
from tests.core.test_batch_props import mutated_batches

from .conftest import (
    Server,
    ServerFactory,
    Tally,
    binary_batch,
    raw_ws_client,
    streams_of,
    unread_bytes,
    wait_until,
)

pytestmark = pytest.mark.kernel

SO_RCVBUFFORCE = 33  # Linux; root: past net.core.rmem_max


def _open(srv: Server) -> tuple[socket.socket, ClientProtocol, Stream]:
    sock, client = raw_ws_client(srv)
    wait_until(lambda: len(streams_of(srv)) == 1, what="the stream")
    (stream,) = streams_of(srv)
    # Room in the server's socket for every frame a test queues unread.
    with socket.socket(fileno=_dup(stream)) as s:
        s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
    return sock, client, stream


def _dup(stream: Stream) -> int:
    return os.dup(stream.fd)


def _queued(
    sock: socket.socket, client: ClientProtocol, stream: Stream, frames: list[Frame]
) -> None:
    """Send ``frames`` while the stream reads nothing, then let it read them all."""
    loop = stream.c.loop
    loop.call_soon_threadsafe(stream.c.pause)
    wait_until(lambda: stream.c.paused, what="the stream to stop reading")
    for f in frames:
        client.send_frame(f)
    data = b"".join(client.data_to_send())
    sock.sendall(data)
    wait_until(lambda: unread_bytes(stream) == len(data), what="every frame in the socket")

    def read_again() -> None:
        stream.c.unpause()
        stream.resume()

    loop.call_soon_threadsafe(read_again)


def _answers(sock: socket.socket, client: ClientProtocol, n: int) -> list[Any]:
    """The next ``n`` text frames (acks) and pongs, in order."""
    out: list[Any] = []
    deadline = time.monotonic() + 20
    while len(out) < n:
        assert time.monotonic() < deadline, f"only {len(out)} of {n} answers came: {out}"
        client.receive_data(sock.recv(1 << 16))
        for ev in client.events_received():
            assert isinstance(ev, Frame)
            if ev.opcode == Opcode.TEXT:
                out.append(json.loads(bytes(ev.data)))
            elif ev.opcode == Opcode.PONG:
                out.append(("pong", bytes(ev.data)))
    return out


def _bin(data: bytes) -> Frame:
    return Frame(Opcode.BINARY, data)


def _drained(srv: Server, acked: int) -> None:
    """The kernel consumed exactly ``acked`` samples, without an error, to the ring's end."""
    deadline = time.monotonic() + 10
    while srv.counters().samples < acked and time.monotonic() < deadline:
        srv.drain()
        time.sleep(0.01)
    kc = srv.counters()
    assert kc.samples == acked and sum(kc.drain_errors.values()) == 0, kc
    ring = srv.runtime.ring
    assert ring.consumer_pos() == ring.producer_pos, "the ring was left with a stuck record"


def test_frames_waiting_behind_one_are_read_ahead_and_each_committed_once_in_order(
    make_server: ServerFactory,
) -> None:
    srv = make_server(ring_size=1 << 22, drain="external", ws_window=64)
    sizes = [10, 2700, 6, 500, 2000, 2700, 40, 1300, 2700, 2700, 7, 900, 2700, 33, 2700]
    tally = Tally()
    frames = []
    for i, m in enumerate(sizes):
        samples = [(i % 8, j) for j in range(m)]
        tally.add_all(samples)
        frames.append(_bin(binary_batch(samples)))
    sock, client, stream = _open(srv)
    with sock:
        _queued(sock, client, stream, frames)
        acks = _answers(sock, client, len(sizes))
    seq = 0
    for i, (ack, m) in enumerate(zip(acks, sizes, strict=True)):
        assert (ack["id"], ack["accepted"], ack["first_seq"]) == (i, m, seq), ack
        seq += m
    # Each frame read ahead left its 8-byte header as an empty DISCARD record:
    # the first of a read never does; 15 frames of 64 KiB at most, 1 MiB a read.
    ahead = (srv.producer_pos() - 24 * sum(sizes)) // 8
    assert srv.producer_pos() == 24 * sum(sizes) + 8 * ahead
    assert 4 <= ahead < len(sizes), f"{ahead} frames read ahead"
    assert stream.read_ahead == ahead
    assert srv.runtime.producer.admission.in_use == 0
    _drained(srv, sum(sizes))
    assert tally.matches(srv.counters())


def test_what_cannot_be_read_ahead_goes_the_general_way_in_its_turn(
    make_server: ServerFactory,
) -> None:
    srv = make_server(ring_size=1 << 22, drain="external", ws_window=64)
    ok = binary_batch([(1, j) for j in range(100)])  # 2400 bytes: an 8-byte header
    bad = bytearray(binary_batch([(2, j) for j in range(100)]))
    struct.pack_into("<I", bad, 24 * 37 + 4, 1)  # record 37's pad word
    small = binary_batch([(3, 1), (3, 2)])  # 48 bytes: a 6-byte header
    big = binary_batch([(4, j) for j in range(3000)])  # 72,000 bytes: a 14-byte header
    frames = [
        _bin(ok),
        Frame(Opcode.PING, b"p1"),
        _bin(ok),
        Frame(Opcode.TEXT, json.dumps({"id": "t", "samples": [{"kind": 5, "value": 9}]}).encode()),
        _bin(bytes(bad)),
        _bin(ok),
        _bin(small),
        _bin(ok),
        _bin(big),
        _bin(ok),
        _bin(ok[:-4]),  # not a multiple of 8
        _bin(ok),
    ]
    sock, client, stream = _open(srv)
    with sock:
        _queued(sock, client, stream, frames)
        got = _answers(sock, client, len(frames))
    assert got[0]["id"] == 0 and got[1] == ("pong", b"p1")
    acks = [a for a in got if isinstance(a, dict)]
    assert [a["id"] for a in acks] == [0, 1, "t", 3, 4, 5, 6, 7, 8, 9, 10]
    assert acks[3]["error"]["code"] == "invalid_batch" and acks[3]["error"]["index"] == 37
    assert acks[9]["error"]["code"] == "invalid_batch"
    accepted = [a.get("accepted", 0) for a in acks]
    assert accepted == [100, 100, 1, 0, 100, 2, 100, 3000, 100, 0, 100]
    seqs = [a["first_seq"] for a in acks if "first_seq" in a]
    assert seqs == sorted(seqs) and seqs[0] == 0
    _drained(srv, sum(accepted))


def test_with_no_read_ahead_each_frame_is_read_alone(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=1 << 22, drain="external", ws_readahead_bytes="0")
    frames = [_bin(binary_batch([(1, i)] * 200)) for i in range(6)]
    sock, client, stream = _open(srv)
    with sock:
        _queued(sock, client, stream, frames)
        acks = _answers(sock, client, len(frames))
    assert [(a["id"], a["first_seq"]) for a in acks] == [(i, 200 * i) for i in range(6)]
    assert stream.read_ahead == 0 and srv.producer_pos() == 24 * 1200  # no header in the ring
    _drained(srv, 1200)


class _Pending(deque[Any]):
    """A stream's ``pending`` that remembers how many frames it held at most."""

    most = 0

    def append(self, frame: Any) -> None:
        super().append(frame)
        self.most = max(self.most, len(self))


def test_a_run_read_ahead_is_acked_a_quarter_window_at_a_time(make_server: ServerFactory) -> None:
    # A client whose window the run filled may send again before the run is
    # settled: its acks go out a quarter window (here 8) at a time, mid-pass,
    # not in one write when the pass ends.
    srv = make_server(ring_size=1 << 22, drain="external", ws_window=32)
    sizes = [100 + i for i in range(24)]
    sock, client, stream = _open(srv)
    assert stream.flush_batch == 8
    written: list[int] = []  # acks in each write, in order
    conn = stream.c
    real_write = conn.write

    def write(data: bytes) -> None:
        written.append(data.count(b'"accepted":'))
        real_write(data)

    conn.write = write  # type: ignore[method-assign]
    frames = [_bin(binary_batch([(1, j)] * m)) for j, m in enumerate(sizes)]
    with sock:
        _queued(sock, client, stream, frames)
        acks = _answers(sock, client, len(sizes))
    assert [a["id"] for a in acks] == list(range(len(sizes)))
    # Most of them were read ahead, settled in one pass with the frame before them.
    assert stream.read_ahead > 8, stream.read_ahead
    assert sum(written) == len(sizes) and max(written) <= 8, written
    _drained(srv, sum(sizes))


def test_the_window_holds_for_frames_read_ahead(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=1 << 22, drain="external", ws_window=3)
    frames = [_bin(binary_batch([(1, i)] * 200)) for i in range(10)]
    sock, client, stream = _open(srv)
    pending = stream.pending = _Pending()
    with sock:
        _queued(sock, client, stream, frames)
        acks = _answers(sock, client, len(frames))
    assert [(a["id"], a["first_seq"]) for a in acks] == [(i, 200 * i) for i in range(10)]
    assert pending.most == 3, f"{pending.most} frames pending with a window of 3"
    assert stream.read_ahead > 0
    _drained(srv, 2000)


def test_a_peer_leaving_while_a_frame_read_ahead_arrives_commits_the_frames_before_it(
    make_server: ServerFactory,
) -> None:
    srv = make_server(ring_size=1 << 22, drain="external")
    p = srv.runtime.producer
    batch = binary_batch([(1, j) for j in range(2000)])  # 48,000 bytes
    half = binary_batch([(2, j) for j in range(1000)])  # 24,000 bytes
    sock, client, stream = _open(srv)
    loop = stream.c.loop
    loop.call_soon_threadsafe(stream.c.pause)
    wait_until(lambda: stream.c.paused, what="the stream to stop reading")
    for body in (batch, half, batch):
        client.send_binary(body)
    data = b"".join(client.data_to_send())
    # The third frame: its header and 28,000 bytes of its payload. Claimed
    # past the first: one frame its size (the second, and the third's start);
    # the third does not fit, and the claim grows for it.
    cut = len(data) - 20_000
    sock.sendall(data[:cut])
    wait_until(lambda: unread_bytes(stream) == cut, what="the frames in the socket")
    loop.call_soon_threadsafe(stream.c.unpause)
    loop.call_soon_threadsafe(stream.resume)
    wait_until(
        lambda: stream.frames == 3 and bool(stream.pending) and stream.pending[-1].head == 8,
        what="the third frame to arrive into the space read ahead",
    )
    third = stream.pending[-1]
    assert third.region is not None and third.receiving
    sock.close()
    wait_until(lambda: p.statistics().batches_abandoned == 1, what="the frame abandoned")
    wait_until(lambda: p.admission.in_use == 0, what="every credit back")
    stats = p.statistics()
    assert stats.batches_committed == 2 and stats.regions_pending == 0
    assert srv.producer_pos() == len(batch) + len(half) + 8  # the second one's header
    _drained(srv, 3000)


@st.composite
def _bundles(draw: st.DrawFn) -> list[bytes]:
    """Frames a client might send in a row: valid batches long enough for an
    8-byte header, some mutated (the validator's and the kernel's call)."""
    lead = encode_batch([b"\x01" * 16] * 6)  # 144 bytes
    out = []
    for _ in range(draw(st.integers(1, 8))):
        body = draw(mutated_batches())
        out.append(lead + body if draw(st.booleans()) else body)
    return out


def test_the_kernel_never_rejects_a_frame_read_ahead(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=1 << 20, drain="kick", max_sample_bytes=4096, ws_window=16)
    sock, client, stream = _open(srv)
    acked = 0
    with sock:

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
        @given(bodies=_bundles())
        def bundle(bodies: list[bytes]) -> None:
            nonlocal acked
            _queued(sock, client, stream, [_bin(b) for b in bodies])
            for ack in _answers(sock, client, len(bodies)):
                if "error" in ack:
                    err = ack["error"]
                    assert err["code"] in ("invalid_batch", "too_large") and err["message"]
                else:
                    acked += ack["accepted"]
            kc = srv.counters()
            assert sum(kc.drain_errors.values()) == 0, f"the kernel refused {bodies}"

        bundle()
    assert acked > 0, "no mutated batch was valid: the fuzzer explored nothing accepted"
    assert stream.read_ahead > 0, "no frame was read ahead: the fuzzer explored nothing"
    _drained(srv, acked)
