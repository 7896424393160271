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
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=stop_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
