"""Processes of the benchmark: the servers it starts and what they cost.

A server is a process tree: ``ringbridge serve`` and uvicorn are one
process, granian a supervisor and one worker. CPU time is read from
``/proc/<pid>/stat`` (user + system, every thread, the native drain worker
included) summed over the tree; peak RSS from ``VmHWM`` summed over the tree,
reset before each row (``clear_refs`` 5) so that each row has its own peak;
wake-ups are the context switches of all the tree's threads.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import launch

_TICK = os.sysconf("SC_CLK_TCK")


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (those alive now)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    return out


def _cpu_one(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0  # ended since the tree was listed
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of every thread of ``pid``'s tree so far."""
    return sum(_cpu_one(p) for p in tree(pid))


def _status_kib(pid: int, field: str) -> int:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def peak_rss_bytes(pid: int) -> int:
    """VmHWM summed over ``pid``'s tree: the peak since start or the last reset."""
    total = sum(_status_kib(p, "VmHWM:") for p in tree(pid)) * 1024
    if total == 0:
        raise RuntimeError(f"no VmHWM for pid {pid}")
    return total


def reset_peak_rss(pid: int) -> None:
    """Restart VmHWM from the current RSS (proc(5): clear_refs 5; root or the owner)."""
    for p in tree(pid):
        # An older kernel, or a process that ended: the peak since start stays.
        with contextlib.suppress(OSError):
            Path(f"/proc/{p}/clear_refs").write_text("5")


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of all threads of ``pid``'s tree."""
    total = 0
    for p in tree(pid):
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
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


def _child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    child_env = dict(os.environ)
    child_env.pop("RINGBRIDGE_TOKEN", None)
    child_env.update(env or {})
    return child_env


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
    with launch.spawned(
        cmd,
        log_path,
        cwd=cwd,
        env=_child_env(env),
        start_timeout=start_timeout,
        stop_timeout=30,
    ) as (addr, pid):
        yield Server(name, addr, pid)


def _answers(url: str, any_status: bool) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status) == 200
    except urllib.error.HTTPError:
        return any_status
    except OSError:
        return False


@contextmanager
def spawned_at(
    name: str,
    cmd: Sequence[str],
    addr: str,
    ready_path: str,
    log_path: Path,
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    start_timeout: float = 60.0,
    any_status: bool = False,
) -> Iterator[Server]:
    """Runs ``cmd`` listening on ``addr`` (a server that does not print its port,
    e.g. granian) until ``GET ready_path`` answers 200 (with ``any_status``:
    answers at all); SIGTERM when the block ends."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            list(cmd), stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=_child_env(env)
        )
    try:
        deadline = time.monotonic() + start_timeout
        while not _answers(f"http://{addr}{ready_path}", any_status):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield Server(name, addr, proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
