"""Processes of the benchmark: the servers it starts and what they cost.

CPU time is read from ``/proc/<pid>/stat`` (user + system, every thread of
the process, the native drain worker included) and peak RSS from
``VmHWM``; wake-ups are the context switches of all the process's threads.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
_RUNNING = re.compile(r"running on http://([\d.]+:\d+)")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of every thread of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM for pid {pid}")


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of all threads of ``pid``."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue  # a thread that just ended
        for line in text.splitlines():
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                total += int(line.split()[1])
    return total


@dataclass(frozen=True)
class Server:
    name: str
    addr: str
    pid: int

    @property
    def port(self) -> int:
        return int(self.addr.rsplit(":", 1)[1])


@contextmanager
def spawned(
    name: str,
    cmd: Sequence[str],
    log_path: Path,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    start_timeout: float = 60.0,
) -> Iterator[Server]:
    """Runs ``cmd`` (a uvicorn-based server on port 0) until the block ends (SIGTERM).

    The address is read from uvicorn's "running on" line in the log file
    (a file, not a pipe: nothing reads it while the server runs).
    """
    child_env = dict(os.environ)
    child_env.pop("RINGBRIDGE_TOKEN", None)
    child_env.update(env or {})
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            list(cmd), stdout=subprocess.DEVNULL, stderr=log, cwd=cwd, env=child_env
        )
    try:
        addr = None
        deadline = time.monotonic() + start_timeout
        while addr is None and time.monotonic() < deadline and proc.poll() is None:
            m = _RUNNING.search(log_path.read_text())
            addr = m.group(1) if m else None
            time.sleep(0.05)
        if addr is None:
            raise RuntimeError(f"{name} server did not start:\n{log_path.read_text()}")
        yield Server(name, addr, proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
