"""What the host can do without ringbridge's server: the rows the others are divided by.

- :func:`host` -- the CPU model and a per-core speed (``build/cpu_loop``: a
  chain of dependent adds, ~ the clock in GHz; and a fixed pure-Python loop),
  printed in the results' header: a figure holds only against anchors
  measured on the same host in the same run;
- :func:`run_c` -- the C libbpf producer (``build/c_producer``), the ceiling
  for samples/s into the ring;
- :func:`run_python` -- the in-process Python batch path on the same ring;
- :func:`run_iperf3` -- loopback TCP, one stream: the ceiling for bytes/s
  through a socket (the 4096 B rows);
- :func:`run_msgspec` -- msgspec's typed decode of exactly the JSON target
  body (and the same decode followed by a ``pack_into`` loop into records),
  in process: the yardstick of the typed JSON rows.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec

from bench import payloads
from bench.cases import Case, Run
from ringbridge.core import ring as core
from ringbridge.errors import RingFullError
from ringbridge.kernel.bpfobj import LoadedRingbridge
from ringbridge.ring import UserRingBuffer
from ringbridge.schema import validate_binary_batch

REPO = Path(__file__).resolve().parents[1]
C_PRODUCER = REPO / "build" / "c_producer"
CPU_LOOP = REPO / "build" / "cpu_loop"

# -- the host ------------------------------------------------------------------------


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo (x86 and arm64 name them apart)."""
    out: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        if not line.strip():
            if out:
                break
            continue
        k, _, v = line.partition(":")
        out.setdefault(k.strip(), v.strip())
    return out


def _python_loop_rate(n: int = 2_000_000, repeat: int = 3) -> float:
    """Iterations per CPU second of a fixed pure-Python loop (the interpreter on
    this core; thread CPU time, so other tenants of a busy machine do not count)."""
    best = float("inf")
    for _ in range(repeat):
        x = 0
        t0 = time.thread_time()
        for i in range(n):
            x = (x + i) ^ 1
        best = min(best, time.thread_time() - t0)
    return n / best


#: The host's TCP congestion control (what every loopback connection of the
#: bench uses, load generators' and iperf3's alike, unless ``--tcp-congestion``).
TCP_CC = Path("/proc/sys/net/ipv4/tcp_congestion_control")


def tcp_congestion() -> str:
    try:
        return TCP_CC.read_text().strip()
    except OSError:
        return "unknown"


@contextmanager
def tcp_congestion_set(name: str | None) -> Iterator[None]:
    """The host's TCP congestion control set to ``name`` for the block (root;
    new connections only), and set back after it; None: left as it is."""
    if not name:
        yield
        return
    before = tcp_congestion()
    try:
        TCP_CC.write_text(name)
    except OSError as exc:
        raise SystemExit(f"bench: cannot set TCP congestion control {name!r}: {exc}") from exc
    try:
        yield
    finally:
        TCP_CC.write_text(before)


#: How an idle CPU waits (a VM's guest halt polling sets what a wake-up across
#: CPUs costs: with it off, ~50 us on the host of 2026-12-03, the ack latency's floor).
CPUIDLE = Path("/sys/devices/system/cpu/cpuidle/current_driver")
HALT_POLL_NS = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")


def cpuidle() -> str:
    """``haltpoll (guest poll 0 ns)``, ``intel_idle``, ... or "" when unknown."""
    try:
        driver = CPUIDLE.read_text().strip()
    except OSError:
        return ""
    try:
        return f"{driver} (guest poll {int(HALT_POLL_NS.read_text())} ns)"
    except (OSError, ValueError):
        return driver


def cpu_ticks() -> tuple[int, int]:
    """(steal, all) CPU time of every CPU so far, in clock ticks (``/proc/stat``):
    steal is the time the hypervisor ran something else while a vCPU wanted to run."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return (0, 0)
    return (fields[7] if len(fields) > 7 else 0, sum(fields))


def steal_pct(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """The share of the CPUs' time stolen between two :func:`cpu_ticks` (None: unknown)."""
    total = after[1] - before[1]
    return 100.0 * (after[0] - before[0]) / total if total > 0 else None


def host() -> dict[str, Any]:
    """CPU model, count and per-core speed of this machine, for the results' header."""
    info = _cpuinfo()
    model = (
        info.get("model name")
        or info.get("Model")
        or info.get("CPU part")
        or platform.processor()
        or "unknown"
    )
    flags = info.get("flags", "").split()
    out: dict[str, Any] = {
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "virtualized": "hypervisor" in flags,
        "nominal_mhz": float(info["cpu MHz"]) if "cpu MHz" in info else None,
        "python_loop_m_per_s": _python_loop_rate() / 1e6,
        "tcp_congestion_control": tcp_congestion(),
        "cpuidle": cpuidle(),
    }
    if CPU_LOOP.exists():
        done = subprocess.run(
            [str(CPU_LOOP), "--iterations=10000000", "--repeat=3"],
            capture_output=True,
            text=True,
            check=True,
        )
        out["adds_per_ns"] = float(json.loads(done.stdout)["adds_per_ns"])
    return out


def host_line(h: dict[str, Any]) -> str:
    """One line for the header: model, CPUs, per-core speed."""
    parts = [f"{h['cpu_model']}, {h['cpus']} CPUs" + (" (VM)" if h.get("virtualized") else "")]
    if h.get("adds_per_ns") is not None:
        parts.append(f"per core {h['adds_per_ns']:.2f} G dependent adds/s (~GHz)")
    parts.append(f"Python loop {h['python_loop_m_per_s']:.1f} M iterations/s")
    if h.get("nominal_mhz"):
        parts.append(f"nominal {h['nominal_mhz']:.0f} MHz")
    if h.get("tcp_congestion_control"):
        parts.append(f"TCP congestion control {h['tcp_congestion_control']}")
    if h.get("cpuidle"):
        parts.append(f"cpuidle {h['cpuidle']}")
    return "; ".join(parts)


# -- the ring: C and Python in process -------------------------------------------------


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
    seconds = float(json.loads(out.stdout)["seconds"])
    return Run(case.key, 0, n, seconds, nbytes=n * core.record_size(case.size))


def run_python(local: LoadedRingbridge, case: Case, quick: bool, ring_size: int) -> Run:
    per = payloads.samples_for_bytes(case.size, 256 << 10)
    batches = payloads.binary_batches(case.size, per)
    rounds = max(1, c_samples(case.size, quick) // (per * len(batches)))
    n = rounds * per * len(batches)
    before = local.read_counters().samples
    with UserRingBuffer(local.ring_fd) as rb:
        t0 = time.perf_counter()
        for _ in range(rounds):
            for b in batches:
                batch = validate_binary_batch(b, ring_size=ring_size, max_sample_bytes=case.size)
                while True:
                    try:
                        rb.commit_batch(batch)
                        break
                    except RingFullError:
                        local.drain()
        while local.drain() > 0:
            pass
        seconds = time.perf_counter() - t0
    got = local.read_counters().samples - before
    if got != n:
        raise RuntimeError(f"Python direct: kernel consumed {got} samples, expected {n}")
    return Run(case.key, 0, n, seconds, nbytes=n * core.record_size(case.size))


# -- loopback TCP ------------------------------------------------------------------------


def iperf3_binary() -> str:
    path = shutil.which("iperf3")
    if path is None:
        raise RuntimeError(
            "iperf3 is not installed (make setup installs it: apt-get install iperf3)"
        )
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_iperf3(case: Case, seconds: float, congestion: str | None = None) -> Run:
    """One TCP stream over loopback for ``seconds``: the bytes the receiver got
    (``congestion``: the sender's algorithm, else the host's)."""
    exe = iperf3_binary()
    port = _free_port()
    # -1: the server ends after its one client.
    server = subprocess.Popen(
        [exe, "-s", "-1", "-B", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            out = subprocess.run(
                [exe, "-c", "127.0.0.1", "-p", str(port), "-t", f"{max(1, round(seconds))}", "-J"]
                + (["-C", congestion] if congestion else []),
                capture_output=True,
                text=True,
                check=False,
            )
            doc = json.loads(out.stdout or "{}")
            # iperf3 -J exits 0 even when it could not connect: its error is in the document.
            err = str(doc.get("error", ""))
            # The server may not listen yet: iperf3 has no readiness signal.
            if "connect" not in err or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        got = doc.get("end", {}).get("sum_received")
        if out.returncode != 0 or err or got is None:
            raise RuntimeError(
                f"iperf3 failed ({out.returncode}): {err or out.stderr.strip() or 'no summary'}"
            )
        cpu = doc["end"].get("cpu_utilization_percent", {})
        return Run(
            case.key,
            0,
            0,
            float(got["seconds"]),
            nbytes=int(got["bytes"]),
            extra={
                "sender_cpu_percent": float(cpu.get("host_total", 0.0)),
                "receiver_cpu_percent": float(cpu.get("remote_total", 0.0)),
            },
        )
    finally:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stderr is not None:
            server.stderr.close()


# -- msgspec -----------------------------------------------------------------------------


class _Sample(msgspec.Struct, forbid_unknown_fields=True):
    """``struct ringbridge_sample`` as a typed msgspec Struct (missing fields 0)."""

    kind: int = 0
    flags: int = 0
    value: int = 0


class _Batch(msgspec.Struct, forbid_unknown_fields=True):
    samples: list[_Sample]


_DECODER = msgspec.json.Decoder(_Batch)
#: One record of a 16-byte sample: u32 len, u32 0, u32 kind, u32 flags, u64 value.
_RECORD = struct.Struct("<IIIIQ")


def _decode(body: bytes) -> int:
    return len(_DECODER.decode(body).samples)


def _decode_pack(body: bytes) -> int:
    samples = _DECODER.decode(body).samples
    step = _RECORD.size
    buf = bytearray(len(samples) * step)
    pack_into = _RECORD.pack_into
    for i, s in enumerate(samples):
        pack_into(buf, i * step, 16, 0, s.kind, s.flags, s.value)
    return len(samples)


def run_msgspec(case: Case, seconds: float) -> Run:
    """Decodes (and with ``msgspec + pack_into`` packs) the JSON target body for ``seconds``."""
    body = payloads.json_body(case.batch)
    fn = _decode_pack if case.path == "msgspec + pack_into" else _decode
    if fn(body) != case.batch:
        raise RuntimeError(f"{case.key}: the body did not decode to {case.batch} samples")
    n = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        for _ in range(16):
            n += fn(body)
        now = time.perf_counter()
        if now >= deadline:
            break
    calls = n // case.batch
    return Run(case.key, 0, n, now - t0, nbytes=calls * len(body), requests=calls)
