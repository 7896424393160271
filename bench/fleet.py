"""Fleet delivery through NATS JetStream, measured: ``python -m bench.fleet``.

Two measurements against one local ``nats-server`` (Debian's, JetStream on a
temporary store), with real ``ringbridge serve`` processes as nodes, each on
its own pins and ring (``bench/fleetnode.py``: the real CLI, noting the
CLOCK_MONOTONIC time of each message's commit):

- **fan-out**: N nodes (20) on one broadcast subject; one batch published at
  a time; per node the time from the publish to its commit; per batch the
  median and the p99 (nearest rank) over the nodes and the time until the
  last node committed it. Once with ``--nats-cursor durable`` (a durable
  consumer per node: per-node state on the stream's leader) and once with
  ``pins`` (no per-node state: an in-memory ordered consumer from the pinned
  position, receipts in a KV bucket), each on fresh nodes.
- **throughput of one node**: a backlog of M batches published before the
  node starts, committed by it as fast as it pulls them (samples/s between
  its first and its last commit, and its CPU), against the same node fed the
  same bodies over HTTP by ``wrk`` (1 and 4 connections). Binary 64 B x 1000
  and typed JSON 16 B x 100 batches.

Everything shares the machine's CPUs (2 here): 20 Python processes, the NATS
server and the publisher. Figures hold only against each other in one run.
Results: ``bench/fleet-results.json`` and the ``fleet`` block of
``bench/results.md`` (``--quick``: 3 nodes, few batches, a temp dir).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.js.api import StreamConfig

from ringbridge.kernel.pins import unpin
from tests.support.launch import REPO, ServeProcess
from tests.support.natsserver import nats_server_binary, running_nats

from . import loadgen, payloads, procs
from .fleetnode import commits

BPFFS = Path("/sys/fs/bpf")
RESULTS_MD = REPO / "bench" / "results.md"
START, END = "<!-- fleet:start -->", "<!-- fleet:end -->"
OCTET = "application/octet-stream"
JSON = "application/json"


# -- nodes --------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    pins: Path
    commits: Path
    proc: ServeProcess

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.proc.url}/v1/stats", timeout=10) as r:
            doc: dict[str, Any] = json.loads(r.read())
        return doc


def make_node(
    tmp: Path, name: str, url: str, subject: str, mode: str, ring: str, *extra: str
) -> Node:
    pins = BPFFS / f"ringbridge-bench-fleet-{name}-{uuid.uuid4().hex[:6]}"
    commits_file = tmp / f"{name}.commits"
    args = [
        f"--pin-dir={pins}",
        f"--ring-size={ring}",
        "--drain=kick",
        "--no-access-log",
        f"--nats={url}",
        "--nats-stream=FLEET",
        f"--nats-subject={subject}",
        f"--nats-durable={name}",
        f"--nats-cursor={mode}",
        *extra,
    ]
    cmd = (sys.executable, "-m", "bench.fleetnode", str(commits_file))
    return Node(name, pins, commits_file, ServeProcess(args, tmp / f"{name}.log", command=cmd))


@contextmanager
def running(nodes: Sequence[Node], timeout: float = 120.0) -> Iterator[None]:
    """Starts every node at once; ready when each consumes (connected, pending known)."""
    try:
        for n in nodes:
            n.proc.start(wait=False)
        for n in nodes:
            n.proc.wait_ready(timeout)
        deadline = time.monotonic() + timeout
        for n in nodes:
            while True:
                f = n.stats()["fleet"]
                if f["state"] == "connected" and f["pending"] is not None:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{n.name} is not consuming: {f}")
                time.sleep(0.1)
        yield
    finally:
        for n in nodes:
            n.proc.stop()
        for n in nodes:
            unpin(n.pins)


# -- publishing ---------------------------------------------------------------------------


async def _js(url: str) -> tuple[Any, Any]:
    nc = await nats.connect(url)
    return nc, nc.jetstream()


async def publish_many(url: str, subject: str, body: bytes, ctype: str, n: int) -> list[int]:
    """``n`` messages, pipelined (acks awaited in windows of 64)."""
    nc, js = await _js(url)
    seqs: list[int] = []
    try:
        for start in range(0, n, 64):
            acks = await asyncio.gather(
                *(
                    js.publish(subject, body, headers={"Content-Type": ctype}, timeout=30)
                    for _ in range(start, min(n, start + 64))
                )
            )
            seqs += [int(a.seq) for a in acks]
    finally:
        await nc.close()
    return seqs


# -- fan-out ------------------------------------------------------------------------------


def _rank(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


async def fanout_rounds(url: str, nodes: Sequence[Node], rounds: int) -> list[dict[str, Any]]:
    """One batch at a time to every node; per batch the commit latencies over the nodes."""
    nc, js = await _js(url)
    body = payloads.json_body(10)
    out: list[dict[str, Any]] = []
    try:
        for _ in range(rounds):
            await asyncio.sleep(0.5)  # idle nodes: each waits in an open pull request
            t0 = time.monotonic_ns()
            ack = await js.publish("fleet.fan", body, headers={"Content-Type": JSON})
            seq = int(ack.seq)
            deadline = time.monotonic() + 60
            while True:
                seen = [commits(n.commits).get(seq) for n in nodes]
                if all(t is not None for t in seen):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"message {seq} not committed by every node in 60 s")
                await asyncio.sleep(0.002)
            ms = [(t - t0) / 1e6 for t in seen if t is not None]
            out.append({"seq": seq, "p50_ms": _rank(ms, 0.5), "p99_ms": _rank(ms, 0.99),
                        "all_ms": max(ms), "latencies_ms": ms})  # fmt: skip
    finally:
        await nc.close()
    return out


def fanout(url: str, tmp: Path, mode: str, n_nodes: int, rounds: int) -> dict[str, Any]:
    nodes = [
        make_node(tmp, f"fan-{mode}-{i:02d}", url, "fleet.fan", mode, "256K")
        for i in range(n_nodes)
    ]
    with running(nodes):
        per_batch = asyncio.run(fanout_rounds(url, nodes, rounds))
    return {"mode": mode, "nodes": n_nodes, "batches": per_batch}


# -- throughput of one node ---------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    key: str
    label: str
    ctype: str
    body: bytes
    samples: int


def shapes() -> list[Shape]:
    return [
        Shape("bin", "binary 64 B x 1000", OCTET, payloads.binary_batch(64, 1000), 1000),
        Shape("json", "typed JSON 16 B x 100", JSON, payloads.json_body(100), 100),
    ]


def _kernel_samples(node: Node, timeout: float = 30.0) -> int:
    """The kernel's count once it consumed all the producer committed."""
    deadline = time.monotonic() + timeout
    while True:
        s = node.stats()
        committed, consumed = s["producer"]["samples_committed"], s["kernel"]["samples"]
        if committed == consumed and s["producer"]["queued_batches"] == 0:
            return int(consumed)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{node.name}: kernel consumed {consumed} of {committed}")
        time.sleep(0.005)


def throughput(url: str, tmp: Path, shape: Shape, messages: int, seconds: int) -> dict[str, Any]:
    subject = f"tp.{shape.key}"
    seqs = asyncio.run(publish_many(url, subject, shape.body, shape.ctype, messages))
    node = make_node(tmp, f"tp-{shape.key}", url, subject, "durable", "8M", "--max-batch-bytes=1M")
    row: dict[str, Any] = {"shape": shape.label, "messages": messages}
    with running([node]):
        pid = node.proc.proc.pid if node.proc.proc is not None else 0
        first = last = None
        cpu0 = cpu1 = t_cpu0 = t_cpu1 = 0.0
        deadline = time.monotonic() + 300
        while last is None:
            c = commits(node.commits)
            if first is None and c:
                cpu0, t_cpu0, first = procs.cpu_seconds(pid), time.perf_counter(), min(c.values())
            if seqs[-1] in c:
                cpu1, t_cpu1, last = procs.cpu_seconds(pid), time.perf_counter(), c[seqs[-1]]
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name}: backlog not committed in 300 s")
            time.sleep(0.02)
        assert first is not None
        span = (last - first) / 1e9
        if _kernel_samples(node) != messages * shape.samples:
            raise RuntimeError(f"{node.name}: kernel counts differ from what was published")
        row["nats"] = {
            "samples_per_s": (messages - 1) * shape.samples / span,
            "batches_per_s": (messages - 1) / span,
            "cpu_percent": 100 * (cpu1 - cpu0) / max(1e-9, t_cpu1 - t_cpu0),
        }
        body = tmp / f"{shape.key}.body"
        body.write_bytes(shape.body)
        addr = node.proc.addr
        for conns in (1, 4):
            before = _kernel_samples(node)
            c0, t0 = procs.cpu_seconds(pid), time.perf_counter()
            load = loadgen.run_wrk(
                f"http://{addr}/v1/samples?timeout=30",
                body,
                shape.ctype,
                connections=conns,
                seconds=seconds,
            )
            consumed = _kernel_samples(node) - before
            wall = time.perf_counter() - t0
            row[f"http_c{conns}"] = {
                "samples_per_s": consumed / load.seconds,
                "batches_per_s": load.requests / load.seconds,
                "cpu_percent": 100 * (procs.cpu_seconds(pid) - c0) / wall,
                "p50_ms": load.latency_p50_us / 1000,
            }
    return row


# -- report -------------------------------------------------------------------------------


def host() -> dict[str, Any]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    binary = nats_server_binary() or "nats-server"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "nats_server": version,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _med(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def _rate(v: float) -> str:
    return f"{v / 1e6:.2f} M" if v >= 1e6 else f"{v / 1e3:.1f} k"


def markdown(doc: dict[str, Any]) -> str:
    h = doc["host"]
    lines = [
        f"Generated by `bench/fleet.py` on {h['generated']}: {h['cpu']}, {h['cpus']} CPUs, "
        f"Linux {h['kernel']}, Python {h['python']}, {h['nats_server']}; one local "
        "nats-server, every node a `ringbridge serve` process on this machine (they share "
        "its CPUs with the server and the publisher). Cells: median (min-max) over the "
        "batches.",
        "",
        "| fan-out of one batch | nodes | p50 over nodes, ms | p99 over nodes, ms "
        "| until every node committed, ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for f in doc["fanout"]:
        b = f["batches"]
        lines.append(
            f"| `--nats-cursor {f['mode']}` | {f['nodes']} | {_med([x['p50_ms'] for x in b])} "
            f"| {_med([x['p99_ms'] for x in b])} | {_med([x['all_ms'] for x in b])} |"
        )
    lines += [
        "",
        "| one node, batches of | from JetStream (backlog) | over HTTP, 1 conn "
        "| over HTTP, 4 conns |",
        "|---|---:|---:|---:|",
    ]
    for t in doc["throughput"]:
        cells = [
            f"{_rate(t[k]['samples_per_s'])} samples/s, {t[k]['batches_per_s']:.0f} batches/s, "
            f"{t[k]['cpu_percent']:.0f} % CPU"
            for k in ("nats", "http_c1", "http_c4")
        ]
        lines.append(f"| {t['shape']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def write_results(path: Path, block: str) -> None:
    text = path.read_text() if path.exists() else "# ringbridge benchmark\n"
    new = f"{START}\n{block}\n{END}"
    if START in text and END in text:
        text = text[: text.index(START)] + new + text[text.index(END) + len(END) :]
    else:
        text = text.rstrip("\n") + "\n\n## Fleet delivery (NATS JetStream)\n\n" + new + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 nodes, few batches: a smoke run")
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=15, help="batches fanned out per mode")
    ap.add_argument("--seconds", type=int, default=3, help="seconds per HTTP run")
    ap.add_argument("--out-dir", type=Path, default=None, help="default: bench/ (quick: temp)")
    args = ap.parse_args(argv)
    n_nodes, rounds = (3, 2) if args.quick else (args.nodes, args.rounds)
    # Two seconds even when quick: a loaded machine may answer nothing in one.
    seconds = 2 if args.quick else args.seconds
    backlog = {"bin": 30, "json": 50} if args.quick else {"bin": 400, "json": 1500}
    out_dir = args.out_dir or (
        Path(tempfile.mkdtemp(prefix="ringbridge-fleet-quick-"))
        if args.quick
        else REPO / "bench"
    )
    binary = nats_server_binary()
    if binary is None:
        raise SystemExit("bench.fleet: nats-server is not installed (make setup installs it)")
    loadgen.wrk_binary()
    tmp = Path(tempfile.mkdtemp(prefix="ringbridge-fleet-"))
    ok = False
    try:
        with ExitStack() as stack:
            server = stack.enter_context(running_nats(tmp / "nats", binary))

            async def streams() -> None:
                nc, js = await _js(server.url)
                await js.add_stream(StreamConfig(name="FLEET", subjects=["fleet.>", "tp.>"]))
                await nc.close()

            asyncio.run(streams())
            doc: dict[str, Any] = {"host": host(), "fanout": [], "throughput": []}
            for mode in ("durable", "pins"):
                print(f"bench.fleet: fan-out to {n_nodes} nodes, {mode}", file=sys.stderr)
                doc["fanout"].append(fanout(server.url, tmp, mode, n_nodes, rounds))
            for shape in shapes():
                print(f"bench.fleet: one node, {shape.label}", file=sys.stderr)
                doc["throughput"].append(
                    throughput(server.url, tmp, shape, backlog[shape.key], seconds)
                )
        ok = True
    finally:
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"bench.fleet: logs kept in {tmp}", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "fleet-results.json").write_text(json.dumps(doc, indent=1) + "\n")
    block = markdown(doc)
    write_results(out_dir / "results.md", block)
    print(block)
    print(f"bench.fleet: results in {out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
