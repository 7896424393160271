"""The library's rows: ``ringbridge.ring`` in-process, against the C producer.

    .venv/bin/python -m bench.library            # 3 interleaved rounds
    .venv/bin/python -m bench.library --quick    # one short round

On one ring (the built-in consumer, loaded by the benchmark, ``kick`` drain:
whoever finds the ring full runs the on-demand drain program once, as the C
producer does), same sample size and content (``struct ringbridge_sample``,
kind cycling, value = index, zero padding):

- **C libbpf**: ``build/c_producer``, ``user_ring_buffer__reserve/submit``
  per sample -- the anchor;
- **library reserve/submit**: :meth:`UserRingBuffer.reserve`, the struct
  packed into the sample's view, :meth:`Sample.submit`, per sample (libbpf's
  API, from Python);
- **library commit_batch**: 256 KiB batches in the record format, validated
  once (:func:`ringbridge.ring.encode_batch` is not timed: the service gets
  them validated from its decoders) and each published with one store.

Throughput counts what the kernel's counters consumed; each run drains to the
end. Speed is the ratio to the C producer in the same round: compare only
within one run. ``run_reserve_submit`` / ``run_commit_batch`` take the same
loaded ring as ``bench.run``'s in-process rows; :func:`run_case` runs them as
rows of its table (``lib-reserve-*``, ``lib-batch-*`` in :mod:`bench.cases`,
anchored to the C producer's row of the same size).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import anchors, payloads  # noqa: E402
from bench.cases import LIBRARY_PATHS, Case, Run  # noqa: E402
from ringbridge.core import ring as core  # noqa: E402
from ringbridge.errors import RingFullError  # noqa: E402
from ringbridge.kernel.bpfobj import LoadedRingbridge, default_object_path, load_default  # noqa: E402
from ringbridge.kernel.pins import unpin  # noqa: E402
from ringbridge.ring import EncodedBatch, UserRingBuffer  # noqa: E402

C_PRODUCER = REPO / "build" / "c_producer"
RING_SIZE = 8 << 20
BATCH_BYTES = 256 << 10
PATHS = ("C libbpf", *LIBRARY_PATHS)
#: reserve/submit costs ~1 us a sample: it runs this fraction of the C producer's count.
RESERVE_SHARE = 8


def run_c(local: LoadedRingbridge, pins: Path, size: int, n: int) -> float:
    """Seconds the C producer takes for ``n`` samples, all consumed."""
    before = local.read_counters().samples
    out = subprocess.run(
        [str(C_PRODUCER), f"--pin-dir={pins}", f"--samples={n}", f"--size={size}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"c_producer failed ({out.returncode}): {out.stderr.strip()}")
    _check(local, before, n, "C producer")
    return float(json.loads(out.stdout)["seconds"])


def run_reserve_submit(local: LoadedRingbridge, size: int, n: int) -> float:
    """Seconds for ``n`` samples through reserve / pack / submit, all consumed."""
    pack = payloads.SAMPLE.pack_into
    pad = bytes(size - payloads.SAMPLE.size)
    before = local.read_counters().samples
    with UserRingBuffer(local.ring_fd) as rb:
        t0 = time.perf_counter()
        for i in range(n):
            while True:
                try:
                    s = rb.reserve(size)
                    break
                except RingFullError:
                    local.drain()
            view = s.view
            pack(view, 0, i % 256, 0, i)
            if pad:
                view[payloads.SAMPLE.size :] = pad
            s.submit()
        while local.drain() > 0:
            pass
        seconds = time.perf_counter() - t0
    _check(local, before, n, "library reserve/submit")
    return seconds


def _batches(size: int) -> list[EncodedBatch]:
    from ringbridge.ring import encode_batch

    per = payloads.samples_for_bytes(size, BATCH_BYTES)
    return [
        encode_batch([payloads.sample_payload(k * per + i, size) for i in range(per)])
        for k in range(payloads.DISTINCT)
    ]


def run_commit_batch(local: LoadedRingbridge, size: int, n: int) -> tuple[float, int]:
    """Seconds for about ``n`` samples in validated 256 KiB batches, all consumed;
    and the exact sample count (whole batches)."""
    batches = _batches(size)
    per_round = sum(b.count for b in batches)
    rounds = max(1, n // per_round)
    before = local.read_counters().samples
    with UserRingBuffer(local.ring_fd) as rb:
        t0 = time.perf_counter()
        for _ in range(rounds):
            for b in batches:
                while True:
                    try:
                        rb.commit_batch(b)
                        break
                    except RingFullError:
                        local.drain()
        while local.drain() > 0:
            pass
        seconds = time.perf_counter() - t0
    _check(local, before, rounds * per_round, "library commit_batch")
    return seconds, rounds * per_round


def run_case(local: LoadedRingbridge, case: Case, quick: bool) -> Run:
    """One of ``bench.run``'s library rows, on its loaded ring."""
    n = anchors.c_samples(case.size, quick)
    if case.path == LIBRARY_PATHS[0]:
        n //= RESERVE_SHARE
        seconds = run_reserve_submit(local, case.size, n)
    else:
        seconds, n = run_commit_batch(local, case.size, n)
    return Run(case.key, 0, n, seconds, nbytes=n * core.record_size(case.size))


def _check(local: LoadedRingbridge, before: int, n: int, what: str) -> None:
    got = local.read_counters().samples - before
    if got != n:
        raise RuntimeError(f"{what}: kernel consumed {got} samples, expected {n}")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def measure(quick: bool, rounds: int, sizes: tuple[int, ...]) -> dict[tuple[str, int], list[float]]:
    """Samples/s of each path and size, per round (rounds interleaved)."""
    rates: dict[tuple[str, int], list[float]] = {}
    pins = Path("/sys/fs/bpf") / f"ringbridge-bench-library-{uuid.uuid4().hex[:8]}"
    try:
        with load_default(default_object_path(), pins, RING_SIZE) as local:
            local.set_budget(0)
            local.disarm_timer()
            for _ in range(rounds):
                for size in sizes:
                    n = anchors.c_samples(size, quick)
                    rates.setdefault(("C libbpf", size), []).append(n / run_c(local, pins, size, n))
                    m = n // RESERVE_SHARE  # fewer: the rate is what counts
                    rates.setdefault((LIBRARY_PATHS[0], size), []).append(
                        m / run_reserve_submit(local, size, m)
                    )
                    seconds, got = run_commit_batch(local, size, n)
                    rates.setdefault((LIBRARY_PATHS[1], size), []).append(got / seconds)
    finally:
        unpin(pins)
    return rates


def table(rates: dict[tuple[str, int], list[float]], sizes: tuple[int, ...]) -> str:
    lines = [
        f"host: {cpu_model()}, {platform.release()}, Python {platform.python_version()}",
        "",
        "| path | sample | M samples/s (median, min-max) | vs C |",
        "|---|---|---|---|",
    ]
    for size in sizes:
        anchor = statistics.median(rates[("C libbpf", size)])
        for path in PATHS:
            r = rates[(path, size)]
            med = statistics.median(r)
            spread = f"{min(r) / 1e6:.2f}-{max(r) / 1e6:.2f}"
            lines.append(
                f"| {path} | {size} B | {med / 1e6:.2f} ({spread}) | {med / anchor:.2f}x |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one short round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median kept)")
    args = ap.parse_args(argv)
    if not C_PRODUCER.exists():
        subprocess.run(["make", "-s", "-C", str(REPO / "bpf"), "OUT=../build"], check=True)
    sizes = (64,) if args.quick else (64, 4096)
    rates = measure(args.quick, 1 if args.quick else args.rounds, sizes)
    print(table(rates, sizes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
