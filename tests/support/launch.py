"""Run ``ringbridge serve`` as a child process and learn its address.

Test and benchmark support, not part of the installed package: the
benchmark, the CLI tests and the wheel test need a real server in its own
process (its CPU apart from the clients', its signals its own). The server
listens on a free port (``--port=0``); its address is read from uvicorn's
"running on" log line.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from ringbridge.errors import UnavailableError

from .stopping import terminate

REPO = Path(__file__).resolve().parents[2]
#: ``python -m ringbridge`` of the interpreter running the tests.
THIS_PYTHON = (sys.executable, "-m", "ringbridge")

_RUNNING = re.compile(r"running on http://([\d.]+:\d+)")


@contextmanager
def spawned(
    cmd: Sequence[str],
    log_path: Path,
    *,
    cwd: Path,
    env: Mapping[str, str],
    start_timeout: float,
    stop_timeout: float = 20.0,
) -> Iterator[tuple[str, int]]:
    """Runs ``cmd`` (a uvicorn server on port 0); yields ``(host:port, pid)``, SIGTERM on exit.

    The address is read from uvicorn's "running on" line in the log file (a
    file, not a pipe: an unread pipe would fill up with access lines and
    block the server).
    """
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            list(cmd), stdout=subprocess.DEVNULL, stderr=log, cwd=cwd, env=dict(env)
        )
    try:
        addr = None
        deadline = time.monotonic() + start_timeout
        while addr is None and time.monotonic() < deadline and proc.poll() is None:
            m = _RUNNING.search(log_path.read_text())
            addr = m.group(1) if m else None
            time.sleep(0.05)
        if addr is None:
            raise UnavailableError(f"{cmd[0]} did not start:\n{log_path.read_text()}")
        yield addr, proc.pid
    finally:
        terminate(proc, stop_timeout)


@contextmanager
def served(
    args: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    base_env: Mapping[str, str] | None = None,
    command: Sequence[str] = THIS_PYTHON,
    cwd: Path = REPO,
    start_timeout: float = 30.0,
    stop_timeout: float = 20.0,
) -> Iterator[str]:
    """``ringbridge serve --port=0 ARGS``; yields ``host:port``, SIGTERM on exit.

    ``command`` is how to run ``ringbridge`` (default: this interpreter's
    ``-m ringbridge``; the wheel test passes a venv's own entry point).

    The child's environment is ``base_env`` (default: this process's) minus
    ``RINGBRIDGE_TOKEN`` (auth only when asked for, by flag or ``env``), plus
    ``env``.
    """
    inherited = os.environ if base_env is None else base_env
    child_env = {k: v for k, v in inherited.items() if k != "RINGBRIDGE_TOKEN"}
    child_env.update(env or {})
    with spawned(
        [*command, "serve", "--port=0", *args],
        log_path,
        cwd=cwd,
        env=child_env,
        start_timeout=start_timeout,
        stop_timeout=stop_timeout,
    ) as (addr, _pid):
        yield addr


class ServeProcess:
    """``ringbridge serve --port=0 ARGS`` that a test can kill -9 and start again.

    Unlike :func:`served` it is not a context manager: a fleet test kills a
    node mid-stream and restarts it on the same pins (a new port each time).
    Its log file accumulates across starts; each start reads its address
    from what it appended. :meth:`start` without waiting, then
    :meth:`wait_ready`, starts many at once (the fan-out benchmark).
    """

    def __init__(
        self,
        args: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        command: Sequence[str] = THIS_PYTHON,
        cwd: Path = REPO,
    ) -> None:
        self.args = list(args)
        self.log_path = log_path
        self.command = list(command)
        self.cwd = cwd
        self.env = {k: v for k, v in os.environ.items() if k != "RINGBRIDGE_TOKEN"}
        self.env.update(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.addr: str | None = None
        self._log_from = 0
        self.starts = 0

    @property
    def url(self) -> str:
        if self.addr is None:
            raise UnavailableError("the server is not running")
        return f"http://{self.addr}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, *, wait: bool = True, timeout: float = 30.0) -> None:
        if self.running:
            raise RuntimeError("already running")
        self._log_from = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.addr = None
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                [*self.command, "serve", "--port=0", *self.args],
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=self.cwd,
                env=self.env,
            )
        self.starts += 1
        if wait:
            self.wait_ready(timeout)

    def log(self) -> str:
        """What this start logged so far."""
        with self.log_path.open() as f:
            f.seek(self._log_from)
            return f.read()

    def wait_ready(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while self.addr is None:
            m = _RUNNING.search(self.log())
            if m:
                self.addr = m.group(1)
                break
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                raise UnavailableError(f"ringbridge serve did not start:\n{self.log()[-4000:]}")
            time.sleep(0.05)
        return self.addr

    def kill(self, sig: int = signal.SIGKILL) -> int:
        """Sends ``sig`` (kill -9 by default) and reaps the process; its exit status."""
        proc = self.proc
        if proc is None:
            raise RuntimeError("not started")
        if proc.poll() is None:
            proc.send_signal(sig)
        rc = proc.wait(timeout=20)
        self.addr = None
        return rc

    def wait_exit(self, timeout: float) -> int:
        """Waits for the process to end on its own (a test hook killed it); its status."""
        if self.proc is None:
            raise RuntimeError("not started")
        rc = self.proc.wait(timeout=timeout)
        self.addr = None
        return rc

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, SIGKILL if it lingers. Idempotent."""
        if self.proc is None or self.proc.poll() is not None:
            return
        terminate(self.proc, timeout)
        self.addr = None
