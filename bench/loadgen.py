"""The load generators: ``wrk`` for HTTP, ``build/ws_client`` for WebSockets,
``build/lat_client`` for the HTTP latency rows.

Both are native and light (a few % of a core at the rates measured here), so
the benchmark measures the server, not its client; their CPU time is reported
beside the server's anyway. Bodies and frames are written to files before the
clock starts.

- HTTP: ``wrk`` with ``bench/post.lua`` (one body from a file, one JSON line
  of totals and latency percentiles at the end). wrk runs for a duration and
  abandons the requests in flight when it ends; the server may still commit
  them, so the sample count of a run is what the kernel consumed (checked to
  lie within what wrk saw answered and that plus one batch per connection).
- HTTP latency: ``lat_client`` (bench/lat_client.c): one connection, one
  request in flight, blocking, each round trip timed from its write to the
  last byte of its answer; every answer read and its status checked. wrk's
  own event loop shows in its tail (the file's comment), so the latency rows
  use this client, and the floor the same one.
- WebSocket: ``ws_client`` (bench/ws_client.c): pre-masked frames, a window
  of batches in flight per connection, every ack read and checked; it waits
  for all acks, so accepted samples equal what the kernel consumed.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
POST_LUA = BENCH / "post.lua"


@dataclass(frozen=True)
class Load:
    """What a load generator reports for one run."""

    requests: int  # answered requests (HTTP) or acked batches (WS)
    accepted: int | None  # samples acked (WS only; wrk does not read bodies)
    seconds: float  # the generator's own wall time
    latency_p50_us: float
    latency_p99_us: float
    client_cpu_s: float
    client: dict[str, float] = field(default_factory=dict)  # ws_client: WS_CLIENT_TIMES


#: Where ws_client's time went while it sent (its JSON line; bench/ws_client.c).
WS_CLIENT_TIMES = (
    "send_seconds",
    "window_full_seconds",
    "tcp_busy_us",
    "tcp_rwnd_limited_us",
    "tcp_sndbuf_limited_us",
)


def wrk_binary() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise RuntimeError("wrk is not installed (make setup installs it: apt-get install wrk)")
    return path


def run_wrk(url: str, body: Path, content_type: str, *, connections: int, seconds: int) -> Load:
    """``wrk`` POSTing ``body`` over ``connections`` keep-alive connections."""
    threads = min(2, connections)
    env = {**os.environ, "BENCH_BODY": str(body), "BENCH_CTYPE": content_type}
    proc = subprocess.Popen(
        [
            wrk_binary(),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout=30s",
            "-s",
            str(POST_LUA),
            url,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    # wrk prints a few hundred bytes: the pipes cannot fill up before it exits.
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err.decode().strip()}")
    line = out.decode().strip().splitlines()[-1]
    r = json.loads(line)
    errors = {k: v for k, v in r.items() if k.startswith("errors_") and v}
    if errors:
        raise RuntimeError(f"wrk {url}: failed requests {errors}:\n{out.decode()}")
    # wrk's own CPU from wait4: setup included, a few ms.
    return _answered(r, f"wrk {url}", usage.ru_utime + usage.ru_stime)


def _answered(
    r: dict[str, Any], what: str, client_cpu_s: float, client: dict[str, float] | None = None
) -> Load:
    """The :class:`Load` of an HTTP run from the JSON line that wrk's
    ``post.lua`` and ``lat_client`` both print."""
    if r["requests"] == 0:
        raise RuntimeError(f"{what}: no request answered: {r}")
    return Load(
        requests=int(r["requests"]),
        accepted=None,
        seconds=r["duration_us"] / 1e6,
        latency_p50_us=float(r["latency_p50_us"]),
        latency_p99_us=float(r["latency_p99_us"]),
        client_cpu_s=client_cpu_s,
        client=client or {},
    )


def _run_client(binary: Path, args: list[str]) -> dict[str, Any]:
    """One of our C clients (lat_client, ws_client): its last line on stdout,
    a JSON object; its stderr in the error when it exits non-zero."""
    out = subprocess.run([str(binary), *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{binary.name} failed ({out.returncode}): {out.stderr.strip()}")
    r: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return r


def run_lat(
    lat_client: Path, addr: str, path: str, body: Path, content_type: str, *, seconds: float
) -> Load:
    """``lat_client`` POSTing ``body`` to ``path``, one request in flight."""
    host, port = addr.rsplit(":", 1)
    args = [f"--host={host}", f"--port={port}", f"--path={path}", f"--body={body}"]
    args += [f"--content-type={content_type}", f"--seconds={seconds}"]
    r = _run_client(lat_client, args)
    p999 = {"latency_p999_us": float(r["latency_p999_us"])}
    return _answered(r, f"lat_client {addr}{path}", float(r["cpu_seconds"]), p999)


def write_ws_batches(path: Path, batches: list[bytes], text: bool) -> None:
    """The batch file of ws_client: ``{u32 len, u8 opcode, 3 pad, payload}`` each."""
    opcode = 1 if text else 2
    with path.open("wb") as f:
        for b in batches:
            f.write(struct.pack("<IB3x", len(b), opcode))
            f.write(b)


def run_ws(
    ws_client: Path,
    addr: str,
    batches: Path,
    *,
    connections: int,
    window: int,
    seconds: float,
    congestion: str | None = None,
) -> Load:
    """``ws_client``; ``congestion``: its sockets' TCP congestion control
    (the host's default when None). Where the client's time went while it
    sent (see bench/ws_client.c) is in :attr:`Load.client`."""
    host, port = addr.rsplit(":", 1)
    args = [f"--host={host}", f"--port={port}", f"--batches={batches}"]
    args += [f"--conns={connections}", f"--window={window}", f"--seconds={seconds}"]
    r = _run_client(ws_client, [*args, *([f"--congestion={congestion}"] if congestion else [])])
    return Load(
        requests=int(r["frames"]),
        accepted=int(r["accepted"]),
        seconds=float(r["seconds"]),
        latency_p50_us=float(r["latency_p50_us"]),
        latency_p99_us=float(r["latency_p99_us"]),
        client_cpu_s=float(r["cpu_seconds"]),
        client={k: float(r[k]) for k in WS_CLIENT_TIMES},
    )
