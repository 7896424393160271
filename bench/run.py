"""ringbridge's benchmark: every way into the ring, against anchors measured in the same run.

    make bench                                   # 3 interleaved rounds, ~6 min
    .venv/bin/python -m bench.run --quick        # a smoke run (CI): the target rows, ~30 s
    .venv/bin/python -m bench.run --update-readme   # also rewrite README's table
    .venv/bin/python -m bench.run --only ws-bin --rounds 5   # some rows (and their anchors)

What runs (speed is a ratio against an anchor of the same run, never a
timed test; the anchors are in :mod:`bench.cases`):

- the host: CPU model and per-core speed (``build/cpu_loop``), in the header;
- anchors: the C libbpf producer (``build/c_producer``) and the in-process
  Python batch path on a ring loaded by the benchmark, with the ring
  library's per-sample reserve/submit and commit_batch (:mod:`bench.library`)
  beside them; loopback TCP, one
  stream (``iperf3``); msgspec's typed decode of the JSON target body, alone
  and followed by a ``pack_into`` loop, in process;
- ``ringbridge serve --drain kick`` (the drain program run after each
  commit) under ``wrk`` (HTTP, ``bench/post.lua``), ``build/lat_client``
  (the HTTP latency rows: one request in flight, blocking) and ``build/ws_client``
  (WebSocket, pre-masked frames): binary record batches, typed JSON, batch
  sizes 1 / 100 / 1000 samples and the 256 KiB / 64 KiB bodies and frames of
  the targets, 1, 16, 64 and 256 clients, 64 B and 4096 B samples;
- a bare FastAPI endpoint under the same uvicorn setup (``bench/bare_app.py``):
  the yardstick of the one-sample POST;
- with granian installed (the ``bench`` extra): the target rows again with
  the same app served by granian, and the bare endpoint under granian;
- latency: one client, one batch in flight, ``wait=committed`` and
  ``wait=consumed``, on the kick server and on a default (timer drain) server;
- the cost of waiting: server CPU while a batch waits for a full ring
  (nothing drains), and of idling: a default server's CPU, context switches
  and timer drains per second with no traffic.

Every case runs once per round, rounds interleaved (all cases, then all
again), so that the machine's noise spreads over all of them; the tables show
the median of the rounds and the spread (min-max). Throughput counts what the
kernel's own counters consumed. CPU is user + system time of the server
process tree (all threads; the kick drain runs there) and of the load
generator; peak RSS is the server's VmHWM, reset before each row.

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
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from contextlib import ExitStack  # noqa: E402

from tqdm import tqdm  # noqa: E402

from bench import ackhist, anchors, library, loadgen, payloads, procs, report, servers, tables  # noqa: E402
from bench.cases import LIBRARY_PATHS, LOOPBACK_REF, Case, Run, baseline_cases, cases  # noqa: E402
from ringbridge.core import ring as core  # noqa: E402
from ringbridge.kernel.bpfobj import default_object_path, load_default  # noqa: E402

BUILD = REPO / "build"
WS_CLIENT = BUILD / "ws_client"
LAT_CLIENT = BUILD / "lat_client"
OCTET = "application/octet-stream"
JSON = "application/json"
_QUIET = {"RINGBRIDGE_ACCESS_LOG": "false"}


# -- the service ------------------------------------------------------------------------


def stats(addr: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{addr}/v1/stats", timeout=10) as r:
        doc: dict[str, Any] = json.loads(r.read())
    return doc


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
    #: Bytes of one body / frame (JSON) -- binary rows count record bytes per sample.
    sizes: dict[str, int] = field(default_factory=dict)

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
                self.sizes[case.key] = sum(map(len, batches)) // len(batches)
            elif case.path == "HTTP binary":
                path.write_bytes(payloads.binary_batch(case.size, case.batch))
            else:
                path.write_bytes(payloads.json_body(case.batch))
            self.sizes.setdefault(case.key, path.stat().st_size)
            self.files[case.key] = path
        return self.files[case.key]

    def nbytes(self, case: Case, samples: int, requests: int) -> int:
        """Bytes of bodies / frames moved: record bytes for binary rows, body bytes for JSON."""
        if "binary" in case.path:
            return samples * core.record_size(case.size)
        return requests * self.sizes[case.key]


def _settled(addr: str, quiet: float = 0.2) -> int:
    """The kernel's sample count once nothing more arrives for ``quiet`` seconds.

    wrk abandons the requests in flight when it stops; a server may still
    commit those whose body it had (granian does, later than uvicorn): they
    belong to the row before, not to the next one.
    """
    count = _until_consumed(addr)
    while True:
        time.sleep(quiet)
        again = _until_consumed(addr)
        if again == count:
            return count
        count = again


def run_network(srv: procs.Server, case: Case, inputs: Inputs, seconds: int) -> Run:
    body = inputs.body(case)
    counted = case.server not in ("bare", "granian-bare", "floor")
    before = _settled(srv.addr) if counted else 0
    procs.reset_peak_rss(srv.pid)
    own = case.group == "latency" and counted  # the service's own ack latency, too
    transport = "ws" if case.path.startswith("WS") else "http"
    hist0 = ackhist.read(srv.addr, transport, case.wait) if own else {}
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
            congestion=case.client_cc,
        )
    elif case.group == "latency" and case.client != "wrk":
        load = loadgen.run_lat(
            LAT_CLIENT,
            srv.addr,
            f"/v1/samples?wait={case.wait}&timeout=30",
            body,
            OCTET if case.path == "HTTP binary" else JSON,
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
    extra = dict(load.client)
    if own:
        hist1 = ackhist.read(srv.addr, transport, case.wait)
        for q, name in ((0.5, "server_ack_p50_le_us"), (0.99, "server_ack_p99_le_us")):
            if (bound := ackhist.quantile_bound(hist0, hist1, q)) is not None:
                extra[name] = bound * 1e6
    return Run(
        case.key,
        0,
        samples,
        seconds_measured,
        nbytes=inputs.nbytes(case, samples, load.requests),
        requests=load.requests,
        # The server idles while a generator starts: its CPU over the whole wall
        # time is its CPU over the measured time.
        server_cpu_s=cpu * min(1.0, seconds_measured / wall) if wall > 0 else cpu,
        client_cpu_s=load.client_cpu_s,
        latency_p50_us=load.latency_p50_us,
        latency_p99_us=load.latency_p99_us,
        peak_rss_mib=procs.peak_rss_bytes(srv.pid) / (1 << 20),
        extra=extra,
    )


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
    half = payloads.binary_batch(64, payloads.samples_for_bytes(64, ring // 2))
    with (
        servers.pinned_dir("blocked") as pins,
        procs.spawned(
            "blocked",
            servers.ringbridge_cmd(pins, "external", ring),
            tmp / "blocked.log",
            cwd=REPO,
            env=_QUIET,
        ) as srv,
    ):

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
    return {
        "cpu_percent": 100 * (c1 - c0) / (t1 - t0),
        "process_wakeups_per_s": (x1 - x0) / (t1 - t0),
    }


# -- main ---------------------------------------------------------------------------------


def select(all_cases: list[Case], only: str) -> list[Case]:
    """The cases whose key contains ``only``, the anchors they are divided by
    (and the latency floor, beside latency rows), and the uvicorn twins of
    granian rows."""
    chosen = [c for c in all_cases if only in c.key]
    needed = {c.anchor for c in chosen if c.anchor}
    if any(c.group == "latency" for c in chosen):
        needed.add(report.A_FLOOR)  # what the host adds: the latency rows' yardstick
    if any(c.client == "wrk" for c in chosen):
        needed.add(report.A_FLOOR_WRK)  # the same under the same client
    needed |= {c.key.removeprefix("granian-") for c in chosen if c.server.startswith("granian")}
    while True:
        more = {c.anchor for c in all_cases if c.key in needed and c.anchor} - needed
        if not more:
            break
        needed |= more
    return [c for c in all_cases if c in chosen or c.key in needed]


def _want_granian(flag: bool | None, quick: bool) -> bool:
    if flag is None:
        return not quick and servers.granian_available()
    if flag and not servers.granian_available():
        raise SystemExit("bench: --granian needs granian: pip install -e '.[bench]'")
    return flag


@contextmanager
def _unwound_on_sigterm() -> Iterator[None]:
    """A SIGTERM (a CI timeout, ``kill``) ends the run as Ctrl-C does: the
    servers stopped, the pins removed, the host's congestion control set
    back -- which Python's default (die at once) would leave behind."""

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    if threading.current_thread() is not threading.main_thread():
        yield  # signals go to the main thread only: a caller there decides
        return
    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the target rows, one short round")
    ap.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds, median kept (3; --quick: 1)"
    )
    ap.add_argument(
        "--seconds", type=int, default=None, help="seconds per network run (2; --quick: 1)"
    )
    ap.add_argument("--only", default="", help="run only cases whose key contains this")
    ap.add_argument(
        "--granian",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also serve the target rows with granian (default: when installed, not --quick)",
    )
    ap.add_argument(
        "--out-dir", type=Path, default=None, help="default: bench/ (quick: a temp dir)"
    )
    ap.add_argument("--update-readme", action="store_true", help="rewrite README.md's table")
    ap.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help="another source tree (e.g. git archive main) whose service runs the same rows",
    )
    ap.add_argument(
        "--tcp-congestion",
        default=None,
        metavar="NAME",
        help="the host's TCP congestion control during the run (e.g. cubic; set back after)",
    )
    args = ap.parse_args(argv)
    # --quick picks the target rows; explicit --rounds/--seconds still apply to
    # them (a before/after check of the targets wants the full rounds).
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.seconds or (1 if args.quick else 2)
    out_dir = args.out_dir or (
        Path(tempfile.mkdtemp(prefix="ringbridge-bench-quick-")) if args.quick else REPO / "bench"
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.update_readme:
        tables.check_readme(REPO / "README.md")
    if not all(p.exists() for p in (anchors.C_PRODUCER, WS_CLIENT, LAT_CLIENT, anchors.CPU_LOOP)):
        subprocess.run(["make", "-s", "-C", str(REPO / "bpf"), "OUT=../build"], check=True)
    loadgen.wrk_binary()
    anchors.iperf3_binary()
    granian = _want_granian(args.granian, args.quick)
    all_cases = select(cases(args.quick, granian), args.only)
    if args.baseline is not None:
        servers.BASELINE["dir"] = args.baseline.resolve()
        # Each baseline row right after its twin: both see the same moment's noise.
        twin = {c.key.removeprefix("base-"): c for c in baseline_cases(all_cases)}
        all_cases = [x for c in all_cases for x in (c, twin.get(c.key)) if x is not None]
    servers_needed = ({c.server for c in all_cases} | {"timer"}) - {"local"}
    runs: list[Run] = []
    extra: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="ringbridge-bench-"))
    t_start = time.perf_counter()
    ok = False
    try:
        with ExitStack() as stack:
            stack.enter_context(_unwound_on_sigterm())
            stack.enter_context(anchors.tcp_congestion_set(args.tcp_congestion))
            # Before any server starts: the per-core speed of a quiet process.
            host = anchors.host()
            local_pins = stack.enter_context(servers.pinned_dir("local"))
            local = stack.enter_context(
                load_default(default_object_path(), local_pins, servers.RING_SIZE)
            )
            local.set_budget(0)
            srv = {name: servers.start(name, stack, tmp) for name in sorted(servers_needed)}
            inputs = Inputs(tmp)
            for c in all_cases:
                if c.server != "local":
                    inputs.body(c)
            time.sleep(1.0)  # let the servers settle after start-up
            extra["idle"] = measure_idle(srv["timer"], 2.0 if args.quick else 5.0)
            anchor_s = 0.25 if args.quick else 1.0

            def step(c: Case) -> Run:
                if c.path == "C libbpf":
                    return anchors.run_c(local, local_pins, c, args.quick)
                if c.path == "Python direct":
                    return anchors.run_python(local, c, args.quick, servers.RING_SIZE)
                if c.path in LIBRARY_PATHS:
                    return library.run_case(local, c, args.quick)
                if c.path == "loopback TCP":
                    return anchors.run_iperf3(c, seconds)
                if c.path == LOOPBACK_REF:
                    return anchors.run_iperf3(c, seconds, report.REFERENCE_CC)
                if c.path.startswith("msgspec"):
                    return anchors.run_msgspec(c, anchor_s)
                return run_network(srv[c.server], c, inputs, seconds)

            with tqdm(total=len(all_cases) * rounds, unit="run", file=sys.stderr) as bar:
                for r in range(rounds):
                    for c in all_cases:
                        bar.set_description(f"round {r + 1}/{rounds}: {c.key}")
                        ticks = anchors.cpu_ticks()
                        run = step(c)
                        run.round = r
                        run.steal_pct = anchors.steal_pct(ticks, anchors.cpu_ticks())
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
        "host": host,
        "host_line": anchors.host_line(host),
        "rounds": rounds,
        "seconds_per_run": seconds,
        "quick": args.quick,
        "ring_size": servers.RING_SIZE,
        "granian": granian,
    }
    doc = {
        "meta": meta,
        "cases": [asdict(c) | {"label": c.label} for c in all_cases],
        "runs": [asdict(r) | {"rate": r.rate} for r in runs],
        "extra": extra,
    }
    (out_dir / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    summary = report.summarize(doc)
    tables.write_markdown(out_dir / "results.md", doc, summary)
    png = tables.plot(out_dir / "results.png", doc, summary)
    if args.update_readme:
        tables.update_readme(REPO / "README.md", tables.readme_block(doc, summary))
    print(f"Host: {meta['host_line']}")
    print(report.targets_table(summary, doc))
    if granian_md := tables.granian_table(doc, summary):
        print(granian_md)
    if baseline_md := tables.baseline_table(doc, summary):
        print(baseline_md)
    print(f"bench: results in {out_dir}" + ("" if png else " (no plot: matplotlib missing)"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
