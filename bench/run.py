"""ringbridge's benchmark: every way into the ring, against the C producer, in one run.

    make bench                                   # 3 interleaved rounds, ~4 min
    .venv/bin/python -m bench.run --quick        # a smoke run (CI), ~1 min
    .venv/bin/python -m bench.run --update-readme   # also rewrite README's table

What runs (speed is a ratio against the in-process C producer, never a
timed test):

- C libbpf producer (``build/c_producer``: ``user_ring_buffer__reserve`` /
  ``submit`` per sample, draining with the on-demand program when full) and
  the in-process Python batch path, on a ring loaded by the benchmark;
- ``ringbridge serve --drain kick`` (the same drain program, run after each
  commit) under ``wrk`` (HTTP, ``bench/post.lua``) and ``build/ws_client``
  (WebSocket, pre-masked frames): binary record batches, typed JSON, batch
  sizes 1 / 100 / 1000 samples and the 256 KiB / 64 KiB bodies and frames of
  the targets, 1 and 16 clients, 64 B and 4096 B samples;
- a bare FastAPI endpoint under the same uvicorn setup (``bench/bare_app.py``):
  the yardstick of the one-sample POST;
- latency: one client, one batch in flight, ``wait=committed`` and
  ``wait=consumed``, on the kick server and on a default (timer drain) server;
- the cost of waiting: server CPU while a batch waits for a full ring
  (nothing drains), and of idling: a default server's CPU, context switches
  and timer drains per second with no traffic.

Every case runs once per round, rounds interleaved (all cases, then all
again), so that the machine's noise spreads over all of them; the tables show
the median of the rounds and the spread (min-max). Throughput counts what the
kernel's own counters consumed. CPU is user + system time of the server
process (all threads; the kick drain runs there) and of the load generator.

Results: ``results.json`` (every run), ``results.md`` (the generated block
between its markers; the rest of the file is kept), ``results.png`` (with
matplotlib: ``pip install -e '.[bench]'``), in ``--out-dir`` (default
``bench/``; a temporary directory with ``--quick``). The README's table is
only rewritten with ``--update-readme``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tqdm import tqdm  # noqa: E402

from bench import loadgen, payloads, procs, report  # noqa: E402
from ringbridge.errors import RingFullError  # noqa: E402
from ringbridge.kernel.bpfobj import (  # noqa: E402
    LoadedRingbridge,
    default_object_path,
    load_default,
)
from ringbridge.kernel.pins import unpin  # noqa: E402
from ringbridge.kernel.ringbuf import UserRingBuffer  # noqa: E402
from ringbridge.schema import validate_binary_batch  # noqa: E402

BUILD = REPO / "build"
C_PRODUCER = BUILD / "c_producer"
WS_CLIENT = BUILD / "ws_client"
BPFFS = Path("/sys/fs/bpf")
RING_SIZE = 8 << 20
MAX_BATCH_BYTES = 1 << 20
OCTET = "application/octet-stream"
JSON = "application/json"


@dataclass(frozen=True)
class Case:
    """One row: a path, a server, a sample size, a batch size, a client count."""

    key: str
    path: str  # C libbpf | Python direct | HTTP binary | WS binary | HTTP JSON | WS JSON | ...
    server: str  # kick | timer | bare | local
    size: int  # sample bytes (16 for JSON struct samples)
    batch: int  # samples per body / frame
    clients: int = 1
    window: int = 16  # WS batches in flight per connection
    wait: str = "committed"
    group: str = "throughput"  # or "latency"

    @property
    def label(self) -> str:
        if self.path in ("C libbpf", "Python direct"):
            return f"{self.path}, {self.size} B"
        what = f"{self.path}, {self.size} B x {self.batch}"
        who = f"{self.clients} conn" + ("s" if self.clients > 1 else "")
        if self.path.startswith("WS"):
            who += f", window {self.window}"
        extra = f", wait={self.wait}" if self.group == "latency" else ""
        server = "" if self.server in ("kick", "local", "bare") else f" [{self.server} drain]"
        return f"{what} ({who}{extra}){server}"


@dataclass
class Run:
    key: str
    round: int
    samples: int
    seconds: float
    requests: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    latency_p50_us: float | None = None
    latency_p99_us: float | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.samples / self.seconds


# -- the matrix -------------------------------------------------------------------------

T_WS, T_HTTP, T_JSON, T_ONE, T_BARE = (
    report.T_WS,
    report.T_HTTP,
    report.T_JSON,
    report.T_ONE,
    report.T_BARE,
)


def cases(quick: bool) -> list[Case]:
    b64k = payloads.samples_for_bytes(64, 64 << 10)
    b256k = payloads.samples_for_bytes(64, 256 << 10)
    out = [
        Case("c-64B", "C libbpf", "local", 64, 0),
        Case(T_WS, "WS binary", "kick", 64, b64k, 1),
        Case(T_HTTP, "HTTP binary", "kick", 64, b256k, 4),
        Case(T_JSON, "HTTP JSON", "kick", 16, 1000, 4),
        Case(T_ONE, "HTTP JSON", "kick", 16, 1, 16),
        Case(T_BARE, "bare FastAPI", "bare", 16, 1, 16),
        Case(
            "lat-http-bin-100-consumed-timer",
            "HTTP binary",
            "timer",
            64,
            100,
            1,
            wait="consumed",
            group="latency",
        ),
    ]
    if quick:
        return out
    out += [
        Case("c-16B", "C libbpf", "local", 16, 0),
        Case("c-4096B", "C libbpf", "local", 4096, 0),
    ]
    out.append(Case("py-64B", "Python direct", "local", 64, 0))
    for batch in (1, 100, 1000):
        for clients in (1, 16):
            out += [
                Case(f"http-bin-64B-{batch}-c{clients}", "HTTP binary", "kick", 64, batch, clients),
                Case(f"ws-bin-64B-{batch}-c{clients}", "WS binary", "kick", 64, batch, clients),
            ]
            if (batch, clients) != (1, 16):
                out.append(
                    Case(f"http-json-{batch}-c{clients}", "HTTP JSON", "kick", 16, batch, clients)
                )
    out += [
        Case("ws-json-100", "WS JSON", "kick", 16, 100, 1),
        Case("ws-json-1000", "WS JSON", "kick", 16, 1000, 1),
        Case("bare-1-c1", "bare FastAPI", "bare", 16, 1, 1),
        Case("http-bin-4096B-64-c4", "HTTP binary", "kick", 4096, 64, 4),
        Case("ws-bin-4096B-15", "WS binary", "kick", 4096, 15, 1),
    ]
    for server in ("kick", "timer"):
        for wait in ("committed", "consumed"):
            if (server, wait) != ("timer", "consumed"):
                out.append(
                    Case(
                        f"lat-http-bin-100-{wait}-{server}",
                        "HTTP binary",
                        server,
                        64,
                        100,
                        1,
                        wait=wait,
                        group="latency",
                    )
                )
            out.append(
                Case(
                    f"lat-http-json-100-{wait}-{server}",
                    "HTTP JSON",
                    server,
                    16,
                    100,
                    1,
                    wait=wait,
                    group="latency",
                )
            )
        out.append(
            Case(
                f"lat-ws-bin-100-{server}",
                "WS binary",
                server,
                64,
                100,
                1,
                window=1,
                group="latency",
            )
        )
    return out


# -- in-process paths ------------------------------------------------------------------


def c_samples(size: int, quick: bool) -> int:
    n = 8_000_000 if size <= 64 else 500_000
    return n // 20 if quick else n


def run_c(local: LoadedRingbridge, pins: Path, case: Case, quick: bool) -> Run:
    n = c_samples(case.size, quick)
    before = local.read_counters().samples
    out = subprocess.run(
        [str(C_PRODUCER), f"--pin-dir={pins}", f"--samples={n}", f"--size={case.size}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"c_producer failed ({out.returncode}): {out.stderr.strip()}")
    got = local.read_counters().samples - before
    if got != n:
        raise RuntimeError(f"C producer: kernel consumed {got} samples, expected {n}")
    return Run(case.key, 0, n, float(json.loads(out.stdout)["seconds"]))


def run_python(local: LoadedRingbridge, case: Case, quick: bool) -> Run:
    per = payloads.samples_for_bytes(case.size, 256 << 10)
    batches = payloads.binary_batches(case.size, per)
    rounds = max(1, c_samples(case.size, quick) // (per * len(batches)))
    n = rounds * per * len(batches)
    before = local.read_counters().samples
    with UserRingBuffer(local.ring_fd, RING_SIZE) as rb:
        t0 = time.perf_counter()
        for _ in range(rounds):
            for b in batches:
                batch = validate_binary_batch(b, ring_size=RING_SIZE, max_sample_bytes=case.size)
                while True:
                    try:
                        rb.commit_batch_nowait(batch.records, batch.count)
                        break
                    except RingFullError:
                        local.drain()
        while local.drain() > 0:
            pass
        seconds = time.perf_counter() - t0
    got = local.read_counters().samples - before
    if got != n:
        raise RuntimeError(f"Python direct: kernel consumed {got} samples, expected {n}")
    return Run(case.key, 0, n, seconds)


# -- the service ------------------------------------------------------------------------


def stats(addr: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{addr}/v1/stats", timeout=10) as r:
        doc: dict[str, Any] = json.loads(r.read())
    return doc


def _counts(addr: str) -> tuple[int, int]:
    """(samples committed by the producer, samples consumed by the kernel)."""
    s = stats(addr)
    return int(s["producer"]["samples_committed"]), int(s["kernel"]["samples"])


def _until_consumed(addr: str, timeout: float = 30.0) -> int:
    """Until the kernel has consumed all the producer committed and no batch is
    still in the queue; returns the kernel's sample count."""
    deadline = time.monotonic() + timeout
    while True:
        s = stats(addr)
        committed, consumed = int(s["producer"]["samples_committed"]), int(s["kernel"]["samples"])
        if committed == consumed and s["producer"]["queued_batches"] == 0:
            return consumed
        if time.monotonic() > deadline:
            raise RuntimeError(f"kernel consumed {consumed} of {committed} within {timeout} s")
        time.sleep(0.002)


@dataclass
class Inputs:
    """Files of bodies and frames per case, written once before the first round."""

    dir: Path
    files: dict[str, Path] = field(default_factory=dict)

    def body(self, case: Case) -> Path:
        if case.key not in self.files:
            path = self.dir / f"{case.key}.body"
            if case.path.startswith("WS"):
                text = case.path == "WS JSON"
                batches = (
                    payloads.json_frames(case.batch)
                    if text
                    else payloads.binary_batches(case.size, case.batch)
                )
                loadgen.write_ws_batches(path, batches, text)
            elif case.path == "HTTP binary":
                path.write_bytes(payloads.binary_batch(case.size, case.batch))
            else:
                path.write_bytes(payloads.json_body(case.batch))
            self.files[case.key] = path
        return self.files[case.key]


def run_network(srv: procs.Server, case: Case, inputs: Inputs, seconds: int) -> Run:
    body = inputs.body(case)
    counted = case.server != "bare"
    _, before = _counts(srv.addr) if counted else (0, 0)
    cpu0 = procs.cpu_seconds(srv.pid)
    t0 = time.perf_counter()
    if case.path.startswith("WS"):
        load = loadgen.run_ws(
            WS_CLIENT,
            srv.addr,
            body,
            connections=case.clients,
            window=case.window,
            seconds=seconds,
        )
    else:
        url = f"http://{srv.addr}/v1/samples?wait={case.wait}&timeout=30"
        load = loadgen.run_wrk(
            url,
            body,
            OCTET if case.path == "HTTP binary" else JSON,
            connections=case.clients,
            seconds=seconds,
        )
    t_load = time.perf_counter()
    if counted:
        samples = _until_consumed(srv.addr) - before
        tail = time.perf_counter() - t_load
    else:
        samples, tail = load.requests * case.batch, 0.0
    cpu = procs.cpu_seconds(srv.pid) - cpu0
    wall = time.perf_counter() - t0
    if load.accepted is not None and load.accepted != samples:
        raise RuntimeError(f"{case.key}: {load.accepted} samples acked, kernel consumed {samples}")
    if load.accepted is None and counted:
        low, high = load.requests * case.batch, (load.requests + case.clients) * case.batch
        if not low <= samples <= high:
            raise RuntimeError(
                f"{case.key}: kernel consumed {samples} samples, {load.requests} answered "
                f"requests of {case.batch} make {low} (at most {high} with those in flight)"
            )
    seconds_measured = load.seconds + tail
    return Run(
        case.key,
        0,
        samples,
        seconds_measured,
        requests=load.requests,
        # The server idles while a generator starts: its CPU over the whole wall
        # time is its CPU over the measured time.
        server_cpu_s=cpu * min(1.0, seconds_measured / wall) if wall > 0 else cpu,
        client_cpu_s=load.client_cpu_s,
        latency_p50_us=load.latency_p50_us,
        latency_p99_us=load.latency_p99_us,
    )


def ringbridge_cmd(pins: Path, drain: str, ring_size: int = RING_SIZE) -> list[str]:
    return [
        sys.executable,
        "-m",
        "ringbridge",
        "serve",
        "--port=0",
        f"--pin-dir={pins}",
        f"--ring-size={ring_size}",
        f"--drain={drain}",
        f"--max-batch-bytes={MAX_BATCH_BYTES}",
    ]


def bare_cmd() -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.bare_app:app",
        "--port=0",
        "--http=httptools",
        "--loop=uvloop",
        "--no-access-log",
        "--workers=1",
        "--log-level=info",
    ]


_QUIET = {"RINGBRIDGE_ACCESS_LOG": "false"}


# -- idle and blocked --------------------------------------------------------------------


def measure_idle(srv: procs.Server, seconds: float) -> dict[str, float]:
    """A default (timer drain) server with no traffic: what it costs per second."""
    s0, c0, x0, t0 = (
        stats(srv.addr),
        procs.cpu_seconds(srv.pid),
        procs.context_switches(srv.pid),
        time.perf_counter(),
    )
    time.sleep(seconds)
    s1, c1, x1, t1 = (
        stats(srv.addr),
        procs.cpu_seconds(srv.pid),
        procs.context_switches(srv.pid),
        time.perf_counter(),
    )
    dt = t1 - t0
    return {
        "cpu_percent": 100 * (c1 - c0) / dt,
        # The /v1/stats calls themselves cost two switches or so.
        "process_wakeups_per_s": (x1 - x0) / dt,
        "timer_drains_per_s": (s1["kernel"]["drain_calls"] - s0["kernel"]["drain_calls"]) / dt,
    }


def measure_blocked(tmp: Path, seconds: float) -> dict[str, float]:
    """Server CPU while a batch waits for space in a full ring nothing drains."""
    ring = 1 << 20
    pins = BPFFS / f"ringbridge-bench-blocked-{uuid.uuid4().hex[:8]}"
    half = payloads.binary_batch(64, payloads.samples_for_bytes(64, ring // 2))
    try:
        with procs.spawned(
            "blocked",
            ringbridge_cmd(pins, "external", ring),
            tmp / "blocked.log",
            cwd=REPO,
            env=_QUIET,
        ) as srv:

            def post(timeout: float) -> int:
                req = urllib.request.Request(
                    f"http://{srv.addr}/v1/samples?timeout={timeout}",
                    data=half,
                    headers={"Content-Type": OCTET},
                    method="POST",
                )
                try:
                    with urllib.request.urlopen(req, timeout=timeout + 30) as r:
                        return int(r.status)
                except urllib.error.HTTPError as exc:
                    return int(exc.code)

            for _ in range(2):
                if post(5) != 200:
                    raise RuntimeError("blocked: could not fill the ring")
            waiter = threading.Thread(target=post, args=(seconds + 30,), daemon=True)
            waiter.start()
            deadline = time.monotonic() + 10
            while stats(srv.addr)["producer"]["ring_full_waits"] < 1:
                if time.monotonic() > deadline:
                    raise RuntimeError("blocked: the third batch never waited for space")
                time.sleep(0.01)
            c0, x0, t0 = (
                procs.cpu_seconds(srv.pid),
                procs.context_switches(srv.pid),
                time.perf_counter(),
            )
            time.sleep(seconds)
            c1, x1, t1 = (
                procs.cpu_seconds(srv.pid),
                procs.context_switches(srv.pid),
                time.perf_counter(),
            )
            # The server stops with the batch still waiting: it gets 503 stopping.
        waiter.join(timeout=60)
    finally:
        unpin(pins)
    return {
        "cpu_percent": 100 * (c1 - c0) / (t1 - t0),
        "process_wakeups_per_s": (x1 - x0) / (t1 - t0),
    }


# -- main ---------------------------------------------------------------------------------


@contextmanager
def pinned_dir(tag: str) -> Iterator[Path]:
    path = BPFFS / f"ringbridge-bench-{tag}-{uuid.uuid4().hex[:8]}"
    try:
        yield path
    finally:
        unpin(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="few rows, one short round: a smoke run")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median kept)")
    ap.add_argument("--seconds", type=int, default=2, help="seconds per network run")
    ap.add_argument("--only", default="", help="run only cases whose key contains this")
    ap.add_argument(
        "--out-dir", type=Path, default=None, help="default: bench/ (quick: a temp dir)"
    )
    ap.add_argument("--update-readme", action="store_true", help="rewrite README.md's table")
    args = ap.parse_args(argv)
    rounds = 1 if args.quick else args.rounds
    seconds = 1 if args.quick else args.seconds
    out_dir = args.out_dir or (
        Path(tempfile.mkdtemp(prefix="ringbridge-bench-quick-")) if args.quick else REPO / "bench"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.update_readme:
        report.check_readme(REPO / "README.md")
    for tool in (C_PRODUCER, WS_CLIENT):
        if not tool.exists():
            subprocess.run(["make", "-s", "-C", str(REPO / "bpf"), "OUT=../build"], check=True)
    loadgen.wrk_binary()
    all_cases = [c for c in cases(args.quick) if args.only in c.key]
    servers_needed = {c.server for c in all_cases} | {"timer"}
    runs: list[Run] = []
    extra: dict[str, dict[str, float]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="ringbridge-bench-"))
    t_start = time.perf_counter()
    ok = False
    try:
        with ExitStack() as stack:
            local_pins = stack.enter_context(pinned_dir("local"))
            local = stack.enter_context(load_default(default_object_path(), local_pins, RING_SIZE))
            local.set_budget(0)
            srv: dict[str, procs.Server] = {}
            for name in sorted(servers_needed - {"local"}):
                if name == "bare":
                    cmd, env = bare_cmd(), None
                else:
                    cmd, env = ringbridge_cmd(stack.enter_context(pinned_dir(name)), name), _QUIET
                srv[name] = stack.enter_context(
                    procs.spawned(name, cmd, tmp / f"{name}.log", cwd=REPO, env=env)
                )
            inputs = Inputs(tmp)
            for c in all_cases:
                if c.server not in ("local",):
                    inputs.body(c)
            time.sleep(1.0)  # let the servers settle after start-up
            extra["idle"] = measure_idle(srv["timer"], 2.0 if args.quick else 5.0)

            def step(c: Case) -> Run:
                if c.path == "C libbpf":
                    return run_c(local, local_pins, c, args.quick)
                if c.path == "Python direct":
                    return run_python(local, c, args.quick)
                return run_network(srv[c.server], c, inputs, seconds)

            with tqdm(total=len(all_cases) * rounds, unit="run", file=sys.stderr) as bar:
                for r in range(rounds):
                    for c in all_cases:
                        bar.set_description(f"round {r + 1}/{rounds}: {c.key}")
                        run = step(c)
                        run.round = r
                        runs.append(run)
                        bar.update()
            extra["blocked"] = measure_blocked(tmp, 1.0 if args.quick else 3.0)
            extra["peak_rss_mib"] = {
                name: procs.peak_rss_bytes(s.pid) / (1 << 20) for name, s in srv.items()
            }
        ok = True
    finally:
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"bench: server logs kept in {tmp}", file=sys.stderr)
    meta = {
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "elapsed_s": round(time.perf_counter() - t_start, 1),
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "rounds": rounds,
        "seconds_per_run": seconds,
        "quick": args.quick,
        "ring_size": RING_SIZE,
    }
    doc = {
        "meta": meta,
        "cases": [asdict(c) | {"label": c.label} for c in all_cases],
        "runs": [asdict(r) | {"rate": r.rate} for r in runs],
        "extra": extra,
    }
    (out_dir / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    summary = report.summarize(doc)
    report.write_markdown(out_dir / "results.md", doc, summary)
    png = report.plot(out_dir / "results.png", doc, summary)
    if args.update_readme:
        report.update_readme(REPO / "README.md", report.readme_block(doc, summary))
    print(report.targets_table(summary, doc))
    print(f"bench: results in {out_dir}" + ("" if png else " (no plot: matplotlib missing)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
