"""TCP ACKs while a connection works through a large read (api/dataplane/busyack.py, #15).

Against the kernel's TCP over loopback, on uvloop as the service runs: a
connection warmed up by 8 MiB (so that quick ACKs are spent and its window
is as large as its buffer allows) takes 64 KiB in one read, and while that
read's pass has not ended -- the connection is busy -- the client sends a
quarter of the server's receive buffer more. With :class:`BusyAck`, the
kernel acknowledges it as it arrives; without, those ACKs wait for the next
read (the control: it shows the rule the module exists for). Either way,
what arrived during the pass is read after it: the mark is back to 1 and
EPOLLIN was signalled again.

The server's receive buffer is fixed (``SO_RCVBUF``), as an autotuned one
grows to whatever slack the window has, which decides whether the kernel
ACKs anyway.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
import struct
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvloop

from ringbridge.api.dataplane.busyack import BUSY_READ_BYTES, OFF, BusyAck
from ringbridge.api.keepalive import queued_bytes

from .conftest import Server, raw_ws_client, streams_of, wait_until

WARM = 8 << 20
FIRST = 64 << 10
MSS = 1000  # many segments for few bytes: an ACK every two of them when at once
SERVER_RCVBUF = 1 << 20  # the kernel doubles it
_TCPI_UNACKED = 24  # struct tcp_info: 8 bytes of u8s; rto, ato, snd_mss, rcv_mss, unacked


def _unacked(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    return int(struct.unpack_from("I", info, _TCPI_UNACKED)[0])


def _lowat(sock: Any) -> int:
    return int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT))


@dataclass
class Outcome:
    rcvbuf: int = 0
    sent: int = 0  # by the client while the server did not read
    lowat_while_busy: int = 0
    clamp: int = 0  # TCP_WINDOW_CLAMP after the large read
    unacked_after: int = -1  # the client's segments not ACKed 2 ms after it sent them
    lowat_after_pass: int = 0
    received: int = 0
    reads: list[int] = field(default_factory=list)


def _connected(*client_opts: tuple[int, int, int]) -> tuple[socket.socket, socket.socket]:
    """A loopback TCP connection (client, server side); client options set before it."""
    lst = socket.create_server(("127.0.0.1", 0))
    cli = socket.socket()
    for level, name, value in client_opts:
        cli.setsockopt(level, name, value)
    cli.connect(lst.getsockname())
    srv, _ = lst.accept()
    lst.close()
    return cli, srv


def _run(
    loop: asyncio.AbstractEventLoop, scenario: Coroutine[Any, Any, None], cli: socket.socket
) -> None:
    try:
        loop.run_until_complete(scenario)
    finally:
        loop.close()
        cli.close()


def _send_unread(cli: socket.socket, out: Outcome) -> None:
    """The client sends while nothing reads; how many of its segments are ACKed."""
    cli.sendall(b"b" * out.sent)
    t0 = time.monotonic()
    while _unacked(cli) and time.monotonic() - t0 < 0.002:
        time.sleep(0.0002)
    out.unacked_after = _unacked(cli)


def _large_read(busy_ack: bool, idle: bool = False, mss: int | None = MSS) -> Outcome:
    """Warm up, then one read of FIRST bytes; the client sends a receive
    buffer's eighth while that read's pass is busy -- or, ``idle``, after it
    ended, with the server not reading (as while it waits to be woken)."""
    out = Outcome()
    # Room for what it sends unread: its send returns at once, before any ACK.
    opts = [(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * SERVER_RCVBUF)]
    if mss is not None:
        opts.append((socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss))
    cli, srv = _connected(*opts)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SERVER_RCVBUF)
    loop = uvloop.new_event_loop()
    state = {"phase": "warm"}

    class Reader(asyncio.BufferedProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.busy = BusyAck(transport, loop)
            self.buf = bytearray(4 << 20)

        def get_buffer(self, sizehint: int) -> memoryview:
            return memoryview(self.buf)

        def buffer_updated(self, nbytes: int) -> None:
            out.received += nbytes
            if busy_ack:
                self.busy.read(nbytes)
            if state["phase"] == "warm" and out.received >= WARM:
                self.transport.pause_reading()
                state["phase"] = "paused"
            elif state["phase"] == "first":
                out.reads.append(nbytes)
                sock = self.transport.get_extra_info("socket")
                out.lowat_while_busy = _lowat(sock)
                out.clamp = int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP))
                loop.call_soon(lambda: setattr(out, "lowat_after_pass", _lowat(sock)))
                if idle:
                    self.transport.pause_reading()
                    state["phase"] = "idle"
                    return
                state["phase"] = "busy"
                _send_unread(cli, out)  # the pass is busy: nothing reads

    async def scenario() -> None:
        transport: Any = (await loop.connect_accepted_socket(Reader, srv))[0]
        await loop.run_in_executor(None, cli.sendall, b"a" * WARM)
        while state["phase"] != "paused":
            await asyncio.sleep(0.001)
        cli.sendall(b"c" * FIRST)
        while queued_bytes(srv.fileno()) < FIRST:  # then one read takes it all
            await asyncio.sleep(0.001)
        out.rcvbuf = srv.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        out.sent = out.rcvbuf // 8
        state["phase"] = "first"
        transport.resume_reading()
        if idle:
            while state["phase"] != "idle" or not out.lowat_after_pass:
                await asyncio.sleep(0.001)  # the pass ended
            _send_unread(cli, out)
            transport.resume_reading()
        total = WARM + FIRST + out.sent
        deadline = time.monotonic() + 5
        while out.received < total and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        transport.close()

    _run(loop, scenario(), cli)
    return out


def _control(**kw: Any) -> list[Outcome]:
    """Without it, until the kernel is seen holding the ACKs (one of three tries):
    now and then something else makes it ACK at once (a segment reordered on
    loopback when the sender moves between CPUs puts the receiver in quick-ACK
    mode)."""
    outs: list[Outcome] = []
    for _ in range(3):
        out = _large_read(busy_ack=False, **kw)
        assert out.lowat_while_busy == 1, out
        assert out.received == WARM + FIRST + out.sent, out
        outs.append(out)
        if out.unacked_after > 1:
            break
    return outs


def test_while_a_large_read_is_worked_through_the_kernel_acks_what_arrives() -> None:
    # 1000-byte segments fill the buffer at well under 3/4 payload: the
    # clamp leaves no room there (with it alone, 68 segments stayed
    # unacknowledged), SO_RCVLOWAT is what ACKs them.
    out = _large_read(busy_ack=True)
    assert out.reads[0] >= BUSY_READ_BYTES, out
    assert out.lowat_while_busy == out.rcvbuf // 2, out
    assert out.clamp == out.rcvbuf - out.rcvbuf // 4, out
    # An odd last segment may wait for its pair (the kernel ACKs every second one).
    assert out.unacked_after <= 1, f"segments sent during the busy pass not acknowledged: {out}"
    assert out.lowat_after_pass == 1, out
    assert out.received == WARM + FIRST + out.sent, f"not all read: {out}"


def test_without_it_the_kernel_holds_those_acks_until_the_next_read() -> None:
    outs = _control()
    assert outs[-1].unacked_after > 1, f"the kernel acknowledged at once anyway: {outs}"


def test_after_the_pass_while_nothing_reads_the_clamp_keeps_acks_at_once() -> None:
    # Full-size loopback segments: the buffer holds nearly its size in
    # payload, so the clamp leaves room below it (small segments do not).
    out = _large_read(busy_ack=True, idle=True, mss=None)
    assert out.clamp == out.rcvbuf - out.rcvbuf // 4, out
    assert out.lowat_after_pass == 1, out
    assert out.unacked_after <= 1, f"segments sent while nothing read not acknowledged: {out}"
    assert out.received == WARM + FIRST + out.sent, f"not all read: {out}"
    outs = _control(idle=True, mss=None)
    assert outs[-1].unacked_after > 1, f"the kernel acknowledged at once anyway: {outs}"


def test_small_reads_leave_the_mark_alone() -> None:
    loop = uvloop.new_event_loop()
    cli, srv = _connected()
    seen: list[int] = []
    got = [0]

    class Reader(asyncio.BufferedProtocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.busy = BusyAck(transport, loop)
            self.sock = transport.get_extra_info("socket")
            self.buf = bytearray(1 << 16)

        def get_buffer(self, sizehint: int) -> memoryview:
            return memoryview(self.buf)

        def buffer_updated(self, nbytes: int) -> None:
            got[0] += nbytes
            self.busy.read(nbytes)
            seen.append(_lowat(self.sock))

    async def scenario() -> None:
        transport: Any = (await loop.connect_accepted_socket(Reader, srv))[0]
        for n in range(1, 4):
            cli.sendall(b"x" * (BUSY_READ_BYTES - 1))
            while got[0] < n * (BUSY_READ_BYTES - 1):  # read whole before the next comes
                await asyncio.sleep(0.001)
        transport.close()

    _run(loop, scenario(), cli)
    assert seen and set(seen) == {1}, seen


@pytest.mark.kernel
def test_a_websocket_stream_raises_it_on_its_own_socket_an_http_connection_does_not(
    server: Server,
) -> None:
    http = socket.create_connection(("127.0.0.1", server.port))  # no request yet
    sock, _client = raw_ws_client(server)
    wait_until(lambda: len(streams_of(server)) == 1, what="the stream")
    (stream,) = streams_of(server)
    wait_until(lambda: len(server.server.server_state.connections) == 2, what="both")
    conns: list[Any] = list(server.server.server_state.connections)
    others = [c for c in conns if c is not stream.c]
    assert len(others) == 1 and others[0].busy_ack is OFF, others
    assert stream.c.busy_ack is not OFF
    seen: concurrent.futures.Future[tuple[int, bool]] = concurrent.futures.Future()
    with socket.socket(fileno=os.dup(stream.fd)) as own:

        def large_read() -> None:  # on the server's loop, as a read would
            stream.c.busy_ack.read(BUSY_READ_BYTES)
            seen.set_result((_lowat(own), stream.c.busy_ack.raised))

        stream.c.loop.call_soon_threadsafe(large_read)
        lowat, raised = seen.result(timeout=10)
        assert raised and lowat == own.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2
        wait_until(lambda: _lowat(own) == 1, what="the mark put back after the pass")
        assert not stream.c.busy_ack.raised
    sock.close()
    http.close()
