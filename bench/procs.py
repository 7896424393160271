"""Processes of the benchmark: the servers it starts and what they cost.

CPU time is read from ``/proc/<pid>/stat`` (user + system, every thread of
the process, the native drain worker included) and peak RSS from
``VmHWM``; wake-ups are the context switches of all the process's threads.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import launch

_TICK = os.sysconf("SC_CLK_TCK")


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
    """Runs ``cmd`` (a uvicorn-based server on port 0) until the block ends (SIGTERM)."""
    child_env = dict(os.environ)
    child_env.pop("RINGBRIDGE_TOKEN", None)
    child_env.update(env or {})
    with launch.spawned(
        cmd, log_path, cwd=cwd, env=child_env, start_timeout=start_timeout, stop_timeout=30
    ) as (addr, pid):
        yield Server(name, addr, pid)
