"""Side-by-side throughput of every way into the ring, in one run (DESIGN §5).

For each sample size (16, 64, 256 B by default), on the same ring size and
the same on-demand drain program (``ringbridge_drain``, the "kick" trigger):

(a) C baseline: ``build/c_producer`` -- libbpf ``user_ring_buffer__reserve``/
    ``submit`` per sample, draining through BPF_PROG_TEST_RUN on ENOSPC;
(b) Python direct: :class:`UserRingBuffer` in this process -- each batch goes
    through ``validate_binary_batch`` then ``commit_batch_nowait`` (one copy,
    one producer_pos publish), draining with ``LoadedRingbridge.drain()`` when
    the ring is full;
(c) HTTP: ``ringbridge serve --drain kick`` as a subprocess, binary batches
    POSTed with httpx by a few concurrent clients (``wait=committed``);
(d) WebSocket: the same server, binary frames pipelined on one connection;
(e) HTTP JSON: the same clients POSTing ``application/json`` bodies
    ``{"samples": [{"kind", "flags", "value"}, ...]}`` -- struct samples, which
    are 16 B, so for larger sample sizes ``{"data": "<base64>"}`` samples of
    that size instead (the same payload bytes as the binary rows);
(f) WebSocket JSON: the same samples as text frames ``{"id": i, "samples": [...]}``,
    pipelined like (d).

Network bodies and frames are all built before timing starts: client-side
encoding is not what is measured. JSON batches hold as many samples as the
binary batches (``--batch-bytes`` of ring records), well within the server's
``--max-batch-bytes``.

Every path ends when the kernel has consumed all its samples (the kernel's
own counters must rise by exactly N: content checked, not only timed).
Samples carry ``struct ringbridge_sample`` (kind cycling, value = index) and
zero padding up to the sample size. Results go to ``bench/results.md``.

    .venv/bin/python bench/run.py            # ~1-2 minutes
    .venv/bin/python bench/run.py --quick    # smaller N, a smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import msgspec  # noqa: E402
from tqdm import tqdm  # noqa: E402
from websockets.asyncio.client import connect  # noqa: E402

from ringbridge.codec import validate_binary_batch  # noqa: E402
from ringbridge.core import ring as core  # noqa: E402
from ringbridge.errors import RingFullError  # noqa: E402
from ringbridge.kernel.bpfobj import (  # noqa: E402
    LoadedRingbridge,
    default_object_path,
    load_default,
    unpin,
)
from ringbridge.kernel.ringbuf import UserRingBuffer  # noqa: E402
from tests.support.launch import served  # noqa: E402

SAMPLE = struct.Struct("<IIQ")
C_PRODUCER = REPO / "build" / "c_producer"
BPFFS = Path("/sys/fs/bpf")
README = REPO / "README.md"
README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"


@dataclass(frozen=True)
class Config:
    sizes: tuple[int, ...]
    ring_size: int
    batch_bytes: int
    clients: int
    window: int
    # Samples per run at 16 B: the in-process paths and the network paths.
    n_local: int
    n_net: int
    n_json: int
    repeats: int

    @property
    def max_batch_bytes(self) -> int:
        """The service's ``--max-batch-bytes`` (body, frame and ring-bytes limit)."""
        return max(self.batch_bytes, 1 << 20)


@dataclass(frozen=True)
class Result:
    path: str
    size: int
    samples: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.samples / self.seconds


#: Distinct batch bytes built per sample size; longer runs cycle through them
#: (building records in Python is slower than the paths being measured).
POOL_BYTES = 32 << 20

#: JSON samples per run at 16 B (fewer at larger sizes, as for the other paths):
#: the service decodes JSON at ~1-2 M samples/s, so this keeps each run ~1 s.
N_JSON = 1_000_000


def make_batches(size: int, n: int, batch_bytes: int) -> list[bytes]:
    """``n`` samples of ``size`` bytes as record batches of <= ``batch_bytes``."""
    per = max(1, batch_bytes // core.record_size(size))
    pad = bytes(size - SAMPLE.size)

    def batch(start: int, count: int) -> bytes:
        return core.encode_batch(
            SAMPLE.pack(i % 256, 0, i) + pad for i in range(start, start + count)
        )

    full, rest = divmod(n, per)
    pool = [batch(i * per, per) for i in range(min(full, max(1, POOL_BYTES // batch_bytes)))]
    out = [pool[i % len(pool)] for i in range(full)] if pool else []
    if rest:
        out.append(batch(full * per, rest))
    return out


def sample_payload(i: int, size: int) -> bytes:
    """Payload of sample ``i``: the same bytes on every path."""
    return SAMPLE.pack(i % 256, 0, i) + bytes(size - SAMPLE.size)


@dataclass(frozen=True)
class JsonBatches:
    """Pre-encoded JSON batches: HTTP bodies and WebSocket text frames (id = index)."""

    form: str  # "struct samples" or "base64 data"
    bodies: list[bytes]
    frames: list[str]
    samples: int


def make_json_batches(size: int, n: int, batch_bytes: int, max_batch_bytes: int) -> JsonBatches:
    """``n`` samples as JSON batches holding as many samples as the binary batches.

    16-byte samples are struct samples ``{"kind", "flags", "value"}``; larger
    ones ``{"data": "<base64>"}`` with the payload of :func:`sample_payload`.
    Every body and frame is checked against the server's ``max_batch_bytes``.
    """
    per = max(1, batch_bytes // core.record_size(size))
    struct_form = size == SAMPLE.size
    enc = msgspec.json.Encoder().encode

    def samples(start: int, count: int) -> bytes:
        """The JSON array of samples ``start .. start + count - 1``."""
        if struct_form:
            items: list[dict[str, object]] = [
                {"kind": i % 256, "flags": 0, "value": i} for i in range(start, start + count)
            ]
        else:
            items = [
                {"data": base64.b64encode(sample_payload(i, size)).decode()}
                for i in range(start, start + count)
            ]
        return enc(items)

    full, rest = divmod(n, per)
    arrays: list[bytes] = []
    pool: list[bytes] = []
    for i in range(full):
        if len(pool) < max(1, POOL_BYTES // batch_bytes):
            pool.append(samples(i * per, per))
        arrays.append(pool[i % len(pool)])
    if rest:
        arrays.append(samples(full * per, rest))
    bodies = [b'{"samples":' + a + b"}" for a in arrays]
    frames = [f'{{"id":{i},"samples":{a.decode()}}}' for i, a in enumerate(arrays)]
    biggest = max(len(f) for f in frames)  # a frame is its body plus the id
    if biggest > max_batch_bytes:
        raise RuntimeError(
            f"JSON batch of {biggest} bytes exceeds the server's max_batch_bytes "
            f"({max_batch_bytes}); lower --batch-bytes"
        )
    form = "struct samples" if struct_form else "base64 data"
    return JsonBatches(form, bodies, frames, n)


def kernel_samples(loaded: LoadedRingbridge) -> int:
    return loaded.read_counters().samples


# -- (a) C baseline ------------------------------------------------------------------


def run_c(pin_dir: Path, loaded: LoadedRingbridge, size: int, n: int) -> Result:
    before = kernel_samples(loaded)
    out = subprocess.run(
        [str(C_PRODUCER), "--pin-dir", str(pin_dir), "--samples", str(n), "--size", str(size)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"c_producer failed ({out.returncode}): {out.stderr.strip()}")
    report = json.loads(out.stdout)
    got = kernel_samples(loaded) - before
    if got != n:
        raise RuntimeError(f"C producer: kernel consumed {got} samples, expected {n}")
    return Result("C libbpf (in-process)", size, n, float(report["seconds"]))


# -- (b) Python direct ----------------------------------------------------------------


def run_python(loaded: LoadedRingbridge, ring_size: int, size: int, batches: list[bytes]) -> Result:
    n = sum(sum(1 for _ in core.iter_records(b)) for b in batches)
    before = kernel_samples(loaded)
    with UserRingBuffer(loaded.ring_fd, ring_size) as rb:
        t0 = time.perf_counter()
        for b in batches:
            batch = validate_binary_batch(b, ring_size=ring_size, max_sample_bytes=size)
            while True:
                try:
                    rb.commit_batch_nowait(batch.records, batch.count)
                    break
                except RingFullError:
                    loaded.drain()
        while loaded.drain() > 0:
            pass
        seconds = time.perf_counter() - t0
    got = kernel_samples(loaded) - before
    if got != n:
        raise RuntimeError(f"Python direct: kernel consumed {got} samples, expected {n}")
    return Result("Python UserRingBuffer batch", size, n, seconds)


# -- (c), (d) the service -------------------------------------------------------------


@contextmanager
def service(pin_dir: Path, cfg: Config, log_path: Path) -> Iterator[str]:
    """``ringbridge serve --drain kick`` on a free loopback port; yields host:port."""
    args = [
        f"--pin-dir={pin_dir}",
        f"--ring-size={cfg.ring_size}",
        "--drain=kick",
        f"--max-batch-bytes={max(cfg.batch_bytes, 1 << 20)}",
        f"--ws-window={cfg.window}",
    ]
    # One log line per request would skew the HTTP rows.
    with served(args, log_path, env={"RINGBRIDGE_ACCESS_LOG": "false"}) as addr:
        yield addr


async def _kernel_samples_http(client: httpx.AsyncClient, addr: str) -> int:
    r = await client.get(f"http://{addr}/v1/stats")
    r.raise_for_status()
    return int(r.json()["kernel"]["samples"])


async def _until_consumed(client: httpx.AsyncClient, addr: str, target: int) -> None:
    """Until the kernel's sample counter reaches ``target``; past it is an error."""
    deadline = time.monotonic() + 30
    while (got := await _kernel_samples_http(client, addr)) < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"kernel did not consume {target} samples within 30 s")
        await asyncio.sleep(0.001)
    if got != target:
        raise RuntimeError(f"kernel sample counter is {got}, expected exactly {target}")


def _count(batches: list[bytes]) -> int:
    return sum(sum(1 for _ in core.iter_records(b)) for b in batches)


async def _http(addr: str, batches: list[bytes], n: int, clients: int, media: str) -> float:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        base = await _kernel_samples_http(client, addr)
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for b in batches:
            queue.put_nowait(b)
        accepted = 0

        async def worker() -> None:
            nonlocal accepted
            while not queue.empty():
                body = queue.get_nowait()
                r = await client.post(
                    f"http://{addr}/v1/samples",
                    content=body,
                    headers={"Content-Type": media},
                )
                if r.status_code != 200:
                    raise RuntimeError(f"POST /v1/samples: HTTP {r.status_code}: {r.text}")
                accepted += int(r.json()["accepted"])

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        await _until_consumed(client, addr, base + n)
        seconds = time.perf_counter() - t0
    if accepted != n:
        raise RuntimeError(f"HTTP: {accepted} samples accepted, expected {n}")
    return seconds


async def _ws(addr: str, frames: list[bytes] | list[str], n: int, window: int) -> float:
    """Binary frames (id = frame number) or text frames carrying ``"id": i``."""
    async with httpx.AsyncClient(timeout=60) as client:
        base = await _kernel_samples_http(client, addr)
        async with connect(f"ws://{addr}/v1/stream", compression=None) as ws:
            slots = asyncio.Semaphore(window)
            accepted = 0

            async def send() -> None:
                for f in frames:
                    await slots.acquire()
                    await ws.send(f)

            t0 = time.perf_counter()
            sender = asyncio.create_task(send())
            for i in range(len(frames)):
                ack = json.loads(await ws.recv())
                slots.release()
                if ack.get("id") != i or "error" in ack:
                    raise RuntimeError(f"WebSocket batch {i}: unexpected ack {ack}")
                accepted += int(ack["accepted"])
            await sender
            await _until_consumed(client, addr, base + n)
            seconds = time.perf_counter() - t0
    if accepted != n:
        raise RuntimeError(f"WebSocket: {accepted} samples accepted, expected {n}")
    return seconds


def run_http(addr: str, size: int, batches: list[bytes], clients: int) -> Result:
    n = _count(batches)
    seconds = asyncio.run(_http(addr, batches, n, clients, "application/octet-stream"))
    return Result(f"HTTP POST binary ({clients} clients)", size, n, seconds)


def run_ws(addr: str, size: int, batches: list[bytes], window: int) -> Result:
    n = _count(batches)
    seconds = asyncio.run(_ws(addr, batches, n, window))
    return Result(f"WebSocket binary (window {window})", size, n, seconds)


def run_http_json(addr: str, size: int, jb: JsonBatches, clients: int) -> Result:
    seconds = asyncio.run(_http(addr, jb.bodies, jb.samples, clients, "application/json"))
    return Result(f"HTTP POST JSON ({jb.form}, {clients} clients)", size, jb.samples, seconds)


def run_ws_json(addr: str, size: int, jb: JsonBatches, window: int) -> Result:
    seconds = asyncio.run(_ws(addr, jb.frames, jb.samples, window))
    return Result(
        f"WebSocket JSON text frames ({jb.form}, window {window})", size, jb.samples, seconds
    )


# -- report ---------------------------------------------------------------------------


def render(results: list[Result], cfg: Config, elapsed: float) -> str:
    cpu = os.cpu_count()
    lines = [
        "# ringbridge benchmark",
        "",
        f"Generated by `bench/run.py` on {time.strftime('%Y-%m-%d %H:%M:%S %Z')} in "
        f"{elapsed:.0f} s: Linux {platform.release()}, {cpu} CPUs, "
        f"Python {platform.python_version()}.",
        "",
        f"Same ring ({cfg.ring_size // 1024} KiB), same sample sizes and the same drain "
        "program for every path: the pinned on-demand `ringbridge_drain` (kick). The C "
        "producer and the in-process Python path drain when the ring is full; the "
        "service kicks after each committed batch. Timing stops when the kernel's own "
        "sample counter has risen by exactly N (content is counted, not assumed).",
        f"Network paths send batches of up to {cfg.batch_bytes // 1024} KiB of ring "
        "records: binary bodies/frames in the record format, or JSON holding the same "
        'number of samples -- struct samples `{"kind", "flags", "value"}` at '
        f'{SAMPLE.size} B (the struct\'s size), `{{"data": "<base64>"}}` samples above '
        f"it (the server's body/frame limit is {cfg.max_batch_bytes // 1024} KiB). "
        "All bodies and frames are encoded before timing starts. "
        f"HTTP uses {cfg.clients} concurrent keep-alive clients, the "
        f"WebSocket one connection with {cfg.window} batches in flight. Client and server "
        f"share the machine's CPUs. Each cell is the median of {cfg.repeats} run(s).",
        "",
        render_table(results),
    ]
    return "\n".join(lines)


def render_table(results: list[Result]) -> str:
    """The markdown table (ending with a newline), as in results.md and README.md."""
    lines = [
        "| sample size | path | samples | samples/s | MB/s (payload) | vs C |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    base = {r.size: r.rate for r in results if r.path.startswith("C ")}
    for r in results:
        ratio = r.rate / base[r.size] if r.size in base else float("nan")
        lines.append(
            f"| {r.size} B | {r.path} | {r.samples:,} | {r.rate / 1e6:.2f} M | "
            f"{r.rate * r.size / 1e6:,.0f} | {ratio:.2f} |"
        )
    return "\n".join(lines) + "\n"


def _readme_block(text: str, path: Path) -> tuple[int, int]:
    """Line indices of the start and end markers; raises if not exactly one pair."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == README_START]
    ends = [i for i, line in enumerate(lines) if line.strip() == README_END]
    if len(starts) != 1 or len(ends) != 1 or starts[0] >= ends[0]:
        raise SystemExit(
            f"bench: {path} needs exactly one {README_START!r} line followed by one "
            f"{README_END!r} line (found {len(starts)} start, {len(ends)} end marker(s))"
        )
    return starts[0], ends[0]


def update_readme(path: Path, table: str) -> None:
    """Replaces the lines between the bench markers with ``table``; keeps the markers."""
    text = path.read_text()
    start, end = _readme_block(text, path)
    lines = text.splitlines(keepends=True)
    path.write_text("".join(lines[: start + 1]) + table + "".join(lines[end:]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--sizes", default="16,64,256", help="sample sizes in bytes (>= 16)")
    ap.add_argument("--ring-size", type=int, default=8 << 20)
    ap.add_argument("--batch-bytes", type=int, default=256 << 10)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--window", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="runs per cell; the median is kept")
    ap.add_argument("--quick", action="store_true", help="small N, one run: a smoke test")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results.md")
    ap.add_argument(
        "--readme",
        type=Path,
        default=README,
        help=f"file whose {README_START} .. {README_END} block gets the table",
    )
    args = ap.parse_args(argv)
    # Missing markers fail now, not after minutes of benchmarking.
    _readme_block(args.readme.read_text(), args.readme)
    sizes = tuple(int(s) for s in args.sizes.split(","))
    if any(s < SAMPLE.size for s in sizes):
        ap.error(f"sample sizes must be >= {SAMPLE.size} (struct ringbridge_sample)")
    cfg = Config(
        sizes=sizes,
        ring_size=args.ring_size,
        batch_bytes=args.batch_bytes,
        clients=args.clients,
        window=args.window,
        n_local=200_000 if args.quick else 8_000_000,
        n_net=50_000 if args.quick else 4_000_000,
        n_json=20_000 if args.quick else N_JSON,
        repeats=1 if args.quick else args.repeats,
    )
    if not C_PRODUCER.exists():
        subprocess.run(["make", "-s", "-C", str(REPO / "bpf"), "OUT=../build"], check=True)

    root = BPFFS / f"ringbridge-bench-{uuid.uuid4().hex[:8]}"
    local_pins, svc_pins = root / "local", root / "service"
    results: list[Result] = []
    t_start = time.perf_counter()
    steps: list[tuple[str, int, Callable[[], Result]]] = []
    tmp = Path(tempfile.mkdtemp(prefix="ringbridge-bench-"))
    ok = False
    try:
        loaded = load_default(default_object_path(), local_pins, cfg.ring_size)
        with loaded, service(svc_pins, cfg, tmp / "serve.log") as addr:
            for size in sizes:
                # Fewer samples for bigger sizes (at most 8x fewer): similar run times.
                scale = max(SAMPLE.size / size, 1 / 8)
                n_local = max(1000, int(cfg.n_local * scale))
                n_net = max(1000, int(cfg.n_net * scale))
                n_json = max(1000, int(cfg.n_json * scale))
                local_batches = make_batches(size, n_local, cfg.batch_bytes)
                net_batches = make_batches(size, n_net, cfg.batch_bytes)
                json_batches = make_json_batches(size, n_json, cfg.batch_bytes, cfg.max_batch_bytes)

                def c_step(s: int = size, n: int = n_local) -> Result:
                    return run_c(local_pins, loaded, s, n)

                def py_step(s: int = size, b: list[bytes] = local_batches) -> Result:
                    return run_python(loaded, cfg.ring_size, s, b)

                def http_step(s: int = size, b: list[bytes] = net_batches) -> Result:
                    return run_http(addr, s, b, cfg.clients)

                def ws_step(s: int = size, b: list[bytes] = net_batches) -> Result:
                    return run_ws(addr, s, b, cfg.window)

                def http_json_step(s: int = size, j: JsonBatches = json_batches) -> Result:
                    return run_http_json(addr, s, j, cfg.clients)

                def ws_json_step(s: int = size, j: JsonBatches = json_batches) -> Result:
                    return run_ws_json(addr, s, j, cfg.window)

                steps += [
                    ("C", size, c_step),
                    ("Python", size, py_step),
                    ("HTTP", size, http_step),
                    ("WebSocket", size, ws_step),
                    ("HTTP JSON", size, http_json_step),
                    ("WebSocket JSON", size, ws_json_step),
                ]
            with tqdm(total=len(steps) * cfg.repeats, unit="run", file=sys.stderr) as bar:
                for name, size, step in steps:
                    bar.set_description(f"{name} {size} B")
                    runs = []
                    for _ in range(cfg.repeats):
                        runs.append(step())
                        bar.update()
                    results.append(sorted(runs, key=lambda r: r.rate)[len(runs) // 2])
        ok = True
    finally:
        for d in (local_pins, svc_pins):
            unpin(d)
        try:
            root.rmdir()
        except OSError as exc:
            print(f"bench: could not remove {root}: {exc}", file=sys.stderr)
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"bench: service log kept in {tmp / 'serve.log'}", file=sys.stderr)
    text = render(results, cfg, time.perf_counter() - t_start)
    args.out.write_text(text)
    # The same results, rendered once more by the same function: one run, two files.
    update_readme(args.readme, render_table(results))
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
