"""The benchmark's matrix: every row (a :class:`Case`) and what one run gives (a :class:`Run`).

Each row names its *anchor*: the row of the same run it is divided by, per
round (see :mod:`bench.report`). Anchors measure what the host can do without
ringbridge, so a ratio survives a change of host where a raw rate does not:

- ``c-64B`` -- the C libbpf producer, in process (samples/s): binary 64 B rows,
  and the ring library's rows (``c-4096B`` for its 4096 B ones);
- ``iperf3`` -- loopback TCP, one stream (bytes/s): the 4096 B rows, which
  move bytes rather than samples; ``iperf3-cubic``, the same with the sender
  on cubic, is reported beside it (the host's algorithm may pace: BBR's
  pacing cut one loopback stream to a third);
- ``msgspec-decode`` -- msgspec's typed decode of the JSON target body, in
  process (samples/s): the typed JSON rows;
- ``bare-1-c16`` / ``bare-1-c1`` -- a bare FastAPI endpoint under the same
  uvicorn setup: the one-sample POST rows.

Rows served by granian (server ``granian`` / ``granian-bare``) repeat
uvicorn rows under the other server; the report pairs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from bench import payloads, report

Measure = Literal["samples", "bytes"]

#: ringbridge.ring in process (bench.library): per sample, and in validated batches.
LIBRARY_PATHS = ("library reserve/submit", "library commit_batch")
#: The loopback anchor with the sender on report.REFERENCE_CC (``iperf3 -C``).
LOOPBACK_REF = f"loopback TCP, {report.REFERENCE_CC}"
LOCAL_PATHS = (
    "C libbpf",
    "Python direct",
    *LIBRARY_PATHS,
    "loopback TCP",
    LOOPBACK_REF,
    "msgspec decode",
    "msgspec + pack_into",
)
GRANIAN = ("granian", "granian-bare")


@dataclass(frozen=True)
class Case:
    """One row: a path, a server, a sample size, a batch size, a client count."""

    key: str
    path: str  # one of LOCAL_PATHS | HTTP binary | WS binary | HTTP JSON | WS JSON | bare FastAPI
    server: str  # kick | many | timer | bare | granian | granian-bare | local
    size: int  # sample bytes (16 for JSON struct samples)
    batch: int  # samples per body / frame
    clients: int = 1
    window: int = 16  # WS batches in flight per connection
    wait: str = "committed"
    group: str = "throughput"  # or "latency"
    client_cc: str | None = None  # the WS client's TCP congestion control (None: the host's)
    client: str | None = None  # "wrk": an HTTP latency row under wrk, not build/lat_client
    anchor: str | None = None  # key of the row this one is divided by
    measure: Measure = "samples"  # what the ratio to the anchor divides

    @property
    def label(self) -> str:
        if self.path == "loopback TCP":
            return "loopback TCP, 1 stream (iperf3)"
        if self.path == LOOPBACK_REF:
            cc = report.REFERENCE_CC
            return f"loopback TCP, 1 stream, sender on {cc} (iperf3 -C {cc})"
        if self.path.startswith("msgspec"):
            return f"{self.path}, {self.batch} x {self.size} B JSON body (in process)"
        if self.path in LOCAL_PATHS:
            return f"{self.path}, {self.size} B"
        what = f"{self.path}, {self.size} B x {self.batch}"
        who = f"{self.clients} conn" + ("s" if self.clients > 1 else "")
        if self.path.startswith("WS"):
            who += f", window {self.window}"
        if self.client_cc:
            who += f", client's sender on {self.client_cc}"
        if self.client:
            who += f", client {self.client}"
        extra = f", wait={self.wait}" if self.group == "latency" else ""
        server = {
            "timer": " [timer drain]",
            "granian": " [granian]",
            "baseline": " [baseline]",
            "floor": " [floor: a minimal C responder, not the service]",
        }.get(self.server, "")
        if self.server == "granian-bare":
            server = " [granian]"
        return f"{what} ({who}{extra}){server}"


@dataclass
class Run:
    key: str
    round: int
    samples: int
    seconds: float
    nbytes: int = 0  # bytes of bodies / frames / stream moved
    requests: int = 0
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    latency_p50_us: float | None = None
    latency_p99_us: float | None = None
    peak_rss_mib: float | None = None  # the server's VmHWM over this run alone
    steal_pct: float | None = None  # the host's steal time over this run (/proc/stat)
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.samples / self.seconds

    @property
    def byte_rate(self) -> float:
        return self.nbytes / self.seconds


C64, IPERF, MSGSPEC, MSGSPEC_PACK = report.A_C64, report.A_IPERF, report.A_MSGSPEC, report.A_PACK
IPERF_CUBIC = report.A_IPERF_CUBIC
C4096 = "c-4096B"
JSON_BATCH = 1000  # samples of the JSON target body (and of the msgspec anchor's)


def _bin(
    key: str,
    path: str,
    size: int,
    batch: int,
    clients: int = 1,
    window: int = 16,
    server: str = "kick",
) -> Case:
    """A binary row anchored as its size says: C for 64 B, loopback TCP for 4096 B."""
    if size >= 4096:
        return Case(key, path, server, size, batch, clients, window, anchor=IPERF, measure="bytes")
    return Case(key, path, server, size, batch, clients, window, anchor=C64)


def target_cases() -> list[Case]:
    """The anchors and the issue's target rows: what ``--quick`` runs."""
    b64k = payloads.samples_for_bytes(64, 64 << 10)
    b256k = payloads.samples_for_bytes(64, 256 << 10)
    k4_64k = payloads.samples_for_bytes(4096, 64 << 10)
    k4_256k = payloads.samples_for_bytes(4096, 256 << 10)
    return [
        Case(C64, "C libbpf", "local", 64, 0),
        Case(IPERF, "loopback TCP", "local", 0, 0),
        Case(IPERF_CUBIC, LOOPBACK_REF, "local", 0, 0),
        Case(MSGSPEC, "msgspec decode", "local", 16, JSON_BATCH),
        Case(MSGSPEC_PACK, "msgspec + pack_into", "local", 16, JSON_BATCH, anchor=MSGSPEC),
        _bin(report.T_WS, "WS binary", 64, b64k),
        replace(
            _bin(report.T_WS_CLIENT_REF, "WS binary", 64, b64k), client_cc=report.REFERENCE_CC
        ),
        _bin(report.T_HTTP, "HTTP binary", 64, b256k, 4),
        _bin(report.T_HTTP_4K, "HTTP binary", 4096, k4_256k, 4),
        _bin(report.T_WS_4K, "WS binary", 4096, k4_64k),
        Case(report.T_JSON, "HTTP JSON", "kick", 16, JSON_BATCH, 4, anchor=MSGSPEC),
        Case(report.T_ONE, "HTTP JSON", "kick", 16, 1, 16, anchor=report.T_BARE),
        Case(report.T_BARE, "bare FastAPI", "bare", 16, 1, 16),
        Case(report.T_LAT, "HTTP binary", "timer", 64, 100, 1, group="latency"),
        Case(report.A_FLOOR, "HTTP binary", "floor", 64, 100, 1, group="latency"),
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


def granian_cases(base: list[Case]) -> list[Case]:
    """The uvicorn rows that granian serves too (same bodies, clients and anchors)."""
    keys = (
        report.T_WS,
        report.T_HTTP,
        report.T_HTTP_4K,
        report.T_WS_4K,
        report.T_JSON,
        report.T_ONE,
        report.T_BARE,
    )
    out = []
    for c in base:
        if c.key in keys:
            server = "granian-bare" if c.server == "bare" else "granian"
            out.append(replace(c, key=f"granian-{c.key}", server=server))
    return out


def baseline_cases(base: list[Case]) -> list[Case]:
    """The ringbridge rows again, served by the baseline checkout (``--baseline``)."""
    return [replace(c, key=f"base-{c.key}", server="baseline") for c in base if c.server == "kick"]


def library_cases(sizes: tuple[tuple[int, str], ...]) -> list[Case]:
    """The ring library's rows (:mod:`bench.library`) at each (sample size, C anchor)."""
    return [
        Case(f"lib-{kind}-{size}B", path, "local", size, 0, anchor=anchor)
        for size, anchor in sizes
        for kind, path in zip(("reserve", "batch"), LIBRARY_PATHS, strict=True)
    ]


def cases(quick: bool, granian: bool = False) -> list[Case]:
    out = target_cases()
    if quick:
        return out + library_cases(((64, C64),)) + (granian_cases(out) if granian else [])
    b64k = payloads.samples_for_bytes(64, 64 << 10)
    out += [
        # The latency target and its floor again with wrk as the client (the
        # load generator of the throughput rows): beside the target, not judged.
        Case(report.T_LAT_WRK, "HTTP binary", "timer", 64, 100, 1, group="latency", client="wrk"),
        Case(report.A_FLOOR_WRK, "HTTP binary", "floor", 64, 100, 1, group="latency", client="wrk"),
        Case("c-16B", "C libbpf", "local", 16, 0),
        Case(C4096, "C libbpf", "local", 4096, 0),
        Case("py-64B", "Python direct", "local", 64, 0, anchor=C64),
        *library_cases(((64, C64), (4096, C4096))),
    ]
    # How the cost grows with clients: the WS target's frames over 64 and 256
    # connections, 4 frames in flight each (16 MiB and 64 MiB in all; with 16
    # each, 256 connections would offer 256 MiB, 4 times the default budget:
    # frames would wait for credit). On a server of their own: the memory
    # they leave resident would count in the peak RSS of every later row.
    for clients in (64, 256):
        out.append(_bin(f"{report.T_WS}-c{clients}", "WS binary", 64, b64k, clients, 4, "many"))
    for batch in (1, 100, 1000):
        for clients in (1, 16):
            out += [
                _bin(f"http-bin-64B-{batch}-c{clients}", "HTTP binary", 64, batch, clients),
                _bin(f"ws-bin-64B-{batch}-c{clients}", "WS binary", 64, batch, clients),
            ]
            if (batch, clients) != (1, 16):
                anchor = MSGSPEC if batch > 1 else report.T_BARE if clients > 1 else "bare-1-c1"
                out.append(
                    Case(
                        f"http-json-{batch}-c{clients}",
                        "HTTP JSON",
                        "kick",
                        16,
                        batch,
                        clients,
                        anchor=anchor,
                    )
                )
    out += [
        Case("ws-json-100", "WS JSON", "kick", 16, 100, 1, anchor=MSGSPEC),
        Case("ws-json-1000", "WS JSON", "kick", 16, 1000, 1, anchor=MSGSPEC),
        Case("bare-1-c1", "bare FastAPI", "bare", 16, 1, 1),
    ]
    for server in ("kick", "timer"):
        for wait in ("committed", "consumed"):
            key = f"lat-http-bin-100-{wait}-{server}"
            if key not in (report.T_LAT, "lat-http-bin-100-consumed-timer"):
                out.append(Case(key, "HTTP binary", server, 64, 100, 1, wait=wait, group="latency"))
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
    if granian:
        out += granian_cases(out)
    return out
