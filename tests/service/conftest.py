"""A real ringbridge server per test: uvicorn on 127.0.0.1 in a background thread.

In-process on purpose: the tests reach the server's kernel objects (the
loaded program set: ``drain()``, ``read_counters()``) to check what arrived
in the kernel, and ``time.process_time()`` covers the server's thread when
measuring CPU. The listening socket is bound before uvicorn starts (port 0,
handed over with ``sockets=``), so there is no free-port race.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import os
import socket
import struct
import termios
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from websockets.client import ClientProtocol
from websockets.protocol import State
from websockets.uri import parse_uri

from ringbridge.api.app import create_app
from ringbridge.api.dataplane.stream import Stream
from ringbridge.api.server import make_server as make_uvicorn_server
from ringbridge.backends.builtin import BuiltinBackend
from ringbridge.core.ring import encode_batch
from ringbridge.kernel.bpfobj import LoadedRingbridge
from ringbridge.kernel.counters import KernelCounters
from ringbridge.runtime import Runtime
from ringbridge.settings import Settings

SAMPLE = struct.Struct("<IIQ")  # struct ringbridge_sample {u32 kind; u32 flags; u64 value}
SMALL_RING = 64 * 1024


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll ``cond`` until it holds (tests synchronise on state, not on sleeps)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


async def eventually(
    cond: Callable[[], bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """``wait_until`` for async tests: yields to the loop between polls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def streams_of(srv: Server) -> list[Stream]:
    """The data plane's open WebSocket streams of ``srv`` (server-side objects)."""
    handlers = [getattr(c, "handler", None) for c in list(srv.server.server_state.connections)]
    return [h for h in handlers if isinstance(h, Stream)]


def raw_ws_client(srv: Server, rcvbuf: int | None = None) -> tuple[socket.socket, ClientProtocol]:
    """A blocking socket whose WebSocket handshake the websockets sans-I/O client
    did: frames are then written and read by hand. ``rcvbuf``: the socket's
    SO_RCVBUF, set before the handshake."""
    sock = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    client = ClientProtocol(parse_uri(srv.ws_url), max_size=None)
    client.send_request(client.connect())
    for chunk in client.data_to_send():
        sock.sendall(chunk)
    while client.state is not State.OPEN:
        client.receive_data(sock.recv(65536))
        client.events_received()
    return sock, client


def unread_bytes(stream: Stream) -> int:
    """Bytes in ``stream``'s socket the server has not read yet (FIONREAD)."""
    sock = stream.c.transport.get_extra_info("socket")
    buf = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, buf)
    return buf[0]


def child_server_pid(pin_dir: Path) -> int:
    """The pid of this process's child `ringbridge serve` on ``pin_dir``."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and " serve " in cmd and str(pin_dir) in cmd:
            return int(entry.name)
    raise AssertionError("server process not found")


def sample(kind: int, value: int, flags: int = 0, extra: bytes = b"") -> bytes:
    """One payload in the default struct's layout (plus opaque trailing bytes)."""
    return SAMPLE.pack(kind, flags, value) + extra


def binary_batch(samples: Iterable[tuple[int, int]]) -> bytes:
    return encode_batch(sample(k, v) for k, v in samples)


@dataclass
class Tally:
    """What a test sent, per kind: the kernel must show exactly this."""

    count: Counter[int] = field(default_factory=Counter)
    value: Counter[int] = field(default_factory=Counter)

    def add(self, kind: int, value: int) -> None:
        self.count[kind] += 1
        self.value[kind] += value

    def add_all(self, samples: Iterable[tuple[int, int]]) -> None:
        for k, v in samples:
            self.add(k, v)

    @property
    def total(self) -> int:
        return sum(self.count.values())

    def matches(self, kc: KernelCounters) -> bool:
        return all(
            kc.kind_count[k] == self.count[k] and kc.kind_value[k] == self.value[k]
            for k in range(len(kc.kind_count))
        )

    def diff(self, kc: KernelCounters) -> dict[int, tuple[Any, ...]]:
        return {
            k: (self.count[k], kc.kind_count[k], self.value[k], kc.kind_value[k])
            for k in range(len(kc.kind_count))
            if (self.count[k], self.value[k]) != (kc.kind_count[k], kc.kind_value[k])
        }


@dataclass
class Server:
    settings: Settings
    app: FastAPI
    server: uvicorn.Server
    thread: threading.Thread
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    @property
    def runtime(self) -> Runtime:
        rt: Runtime | None = self.app.state.runtime
        assert rt is not None, "server is not running"
        return rt

    @property
    def builtin(self) -> LoadedRingbridge:
        """The loaded built-in consumer (every server here runs it)."""
        backend = self.runtime.backend
        assert isinstance(backend, BuiltinBackend), "not the built-in consumer"
        return backend.loaded

    def counters(self) -> KernelCounters:
        return self.builtin.read_counters()

    def drain(self) -> int:
        """Run the on-demand drain program once (the kernel consumes the ring)."""
        return self.builtin.drain()

    def producer_pos(self) -> int:
        return self.runtime.ring.producer_pos

    def wait_kernel(self, tally: Tally, timeout: float = 10.0) -> KernelCounters:
        """Poll the kernel counters until they equal ``tally`` (timer drain is async)."""
        deadline = time.monotonic() + timeout
        while True:
            kc = self.counters()
            if tally.matches(kc) and kc.samples == tally.total:
                return kc
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"kernel counters never matched: samples {kc.samples} != {tally.total}; "
                    f"per kind (sent count, kernel count, sent sum, kernel sum): {tally.diff(kc)}"
                )
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "server did not stop"


ServerFactory = Callable[..., Server]


@pytest.fixture
def make_server(bpf_object_path: Path, pin_dir: Path) -> Iterator[ServerFactory]:
    """``make_server(**settings)`` starts a server on this test's fresh pin dir."""
    running: list[Server] = []

    def make(**overrides: Any) -> Server:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": port,
            "pin_dir": pin_dir,
            "bpf_object": bpf_object_path,
            "access_log": False,
            "shutdown_grace": 1.0,
        }
        values.update(overrides)
        settings = Settings(**values)
        app = create_app(settings)
        server = make_uvicorn_server(settings, app)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="ringbridge-test-server"
        )
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                server.should_exit = True
                thread.join(5)
                raise AssertionError("ringbridge server failed to start (see the log)")
            time.sleep(0.01)
        srv = Server(settings, app, server, thread, port)
        running.append(srv)
        return srv

    yield make
    for srv in running:
        if srv.thread.is_alive():
            srv.stop()


@pytest.fixture
def server(make_server: ServerFactory) -> Server:
    """Default: timer drain (the kernel consumes on its own), 1 MiB ring."""
    return make_server(ring_size=1024 * 1024)


@pytest.fixture
def stalled_server(make_server: ServerFactory) -> Server:
    """drain=external and nothing drains: the ring fills; tests drain by hand."""
    return make_server(ring_size=SMALL_RING, drain="external")
