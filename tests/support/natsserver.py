"""A real ``nats-server`` with JetStream, for tests: temp store, loopback, free ports.

Test support, not part of the installed package. The server is Debian's
``nats-server`` (``make setup`` installs it). It listens on 127.0.0.1 only,
keeps JetStream's store in a directory the test owns, and is ready when its
monitoring endpoint's ``/healthz`` answers 200 (JetStream included).
:meth:`NatsServer.restart` stops it and starts it again on the same ports and
store: what a client sees when the server restarts mid-stream.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .stopping import terminate

__all__ = ["NatsCluster", "NatsServer", "nats_server_binary", "running_cluster", "running_nats"]


def nats_server_binary() -> str | None:
    """The ``nats-server`` executable, if installed (Debian puts it in /usr/sbin)."""
    return shutil.which("nats-server") or shutil.which("nats-server", path="/usr/sbin:/usr/bin")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class NatsServer:
    """One nats-server process; start, stop, restart in place, kill -9."""

    def __init__(self, workdir: Path, binary: str, extra_args: tuple[str, ...] = ()) -> None:
        self.binary = binary
        #: More flags (auth, TLS), e.g. ("--auth", TOKEN).
        self.extra_args = extra_args
        self.store = workdir / "jetstream"
        self.log_path = workdir / "nats-server.log"
        self.port = _free_port()
        self.monitor_port = _free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _cmd(self) -> list[str]:
        return [
            self.binary,
            "--jetstream",
            "--store_dir",
            str(self.store),
            "--addr",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--http_port",
            str(self.monitor_port),
            "--log",
            str(self.log_path),
            *self.extra_args,
        ]

    def _ready(self) -> bool:
        url = f"http://127.0.0.1:{self.monitor_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def start(self, timeout: float = 20.0) -> None:
        if self.running:
            raise RuntimeError("nats-server is already running")
        self.store.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            self._cmd(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        self.starts += 1
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                log = self.log_path.read_text() if self.log_path.exists() else ""
                self.stop()
                raise RuntimeError(f"nats-server did not become ready:\n{log[-4000:]}")
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a clean shutdown flushes the store), SIGKILL if it lingers. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, timeout)

    def kill(self) -> None:
        """SIGKILL, no shutdown at all (the store keeps what it had synced)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def restart(self, down_for: float = 0.0, timeout: float = 20.0) -> None:
        """Stop, stay down ``down_for`` seconds, start again on the same ports and store."""
        self.stop()
        if down_for:
            time.sleep(down_for)
        self.start(timeout)


@contextmanager
def running_nats(
    workdir: Path, binary: str, extra_args: tuple[str, ...] = ()
) -> Iterator[NatsServer]:
    server = NatsServer(workdir, binary, extra_args)
    # Two free ports found apart may still collide with another process's
    # bind in between: try fresh ones a few times.
    for attempt in range(3):
        try:
            server.start()
            break
        except RuntimeError:
            if attempt == 2:
                raise
            server = NatsServer(workdir, binary, extra_args)
    try:
        yield server
    finally:
        server.stop()


class NatsCluster:
    """Three nats-servers routed into one JetStream cluster on loopback (README's layout).

    Each server has its own store and config file; :meth:`kill` and
    :meth:`start` act on one server, so a test can take a stream's leader
    away and bring it back.
    """

    SIZE = 3

    def __init__(self, workdir: Path, binary: str) -> None:
        self.workdir = workdir
        self.binary = binary
        self.ports = [(_free_port(), _free_port(), _free_port()) for _ in range(self.SIZE)]
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * self.SIZE

    @property
    def urls(self) -> list[str]:
        return [f"nats://127.0.0.1:{client}" for client, _route, _http in self.ports]

    def _config(self, i: int) -> Path:
        _client, _route, _http = self.ports[i]
        routes = "\n".join(f"    nats-route://127.0.0.1:{r}" for _c, r, _h in self.ports)
        path = self.workdir / f"nats-{i}.conf"
        path.write_text(
            f"server_name: nats-{i}\n"
            f"listen: 127.0.0.1:{_client}\n"
            f"http: 127.0.0.1:{_http}\n"
            f"jetstream {{\n  store_dir: {self.workdir / f'store-{i}'}\n}}\n"
            f"cluster {{\n  name: fleet\n  listen: 127.0.0.1:{_route}\n"
            f"  routes: [\n{routes}\n  ]\n}}\n"
        )
        return path

    def _healthy(self, i: int) -> bool:
        url = f"http://127.0.0.1:{self.ports[i][2]}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    def start(self, i: int) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = self.workdir / f"nats-{i}.log"
        self._procs[i] = subprocess.Popen(
            [self.binary, "-c", str(self._config(i)), "--log", str(log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(self._healthy(i) for i, p in enumerate(self._procs) if p is not None):
            for i, proc in enumerate(self._procs):
                if proc is not None and proc.poll() is not None:
                    # e.g. a port found free and taken by another process before
                    # this node bound it: nats-server exits at once ([FTL]).
                    log = self.workdir / f"nats-{i}.log"
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    raise RuntimeError(f"nats-{i} exited ({proc.returncode}):\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError("the NATS cluster did not become healthy")
            time.sleep(0.1)

    def kill(self, i: int) -> None:
        proc, self._procs[i] = self._procs[i], None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for i, proc in enumerate(self._procs):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.kill(i)
            self._procs[i] = None


@contextmanager
def running_cluster(workdir: Path, binary: str) -> Iterator[NatsCluster]:
    # Nine free ports found apart may collide with another process's bind in
    # between, as running_server's two may: try a new cluster, fresh ports and
    # an empty directory, a few times.
    for attempt in range(3):
        shutil.rmtree(workdir, ignore_errors=True)
        cluster = NatsCluster(workdir, binary)
        try:
            for i in range(cluster.SIZE):
                cluster.start(i)
            cluster.wait_healthy()
            break
        except RuntimeError:
            cluster.stop()
            if attempt == 2:
                raise
    try:
        yield cluster
    finally:
        cluster.stop()
