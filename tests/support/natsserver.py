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

__all__ = ["NatsServer", "nats_server_binary", "running_nats"]


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
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

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
