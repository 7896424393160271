"""The benchmark's summary and targets, from its results document.

Medians are over the interleaved rounds. Every row names an *anchor* (a row
of the same run: the C producer, loopback TCP, msgspec's in-process decode,
bare FastAPI; see :mod:`bench.cases`); its ratio is taken per round (each
round runs the anchor too) and then the median, so a slow round slows both
sides of its ratio. The markdown tables are in :mod:`bench.tables`.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

# Keys of the target rows and of the anchors (bench.cases builds them).
T_WS = "ws-bin-64B-64KiB"
T_HTTP = "http-bin-64B-256KiB-c4"
T_HTTP_4K = "http-bin-4096B-256KiB-c4"
T_WS_4K = "ws-bin-4096B-64KiB"
T_JSON = "http-json-1000-c4"
T_ONE = "http-json-1-c16"
T_BARE = "bare-1-c16"
T_LAT = "lat-http-bin-100-committed-timer"
A_C64 = "c-64B"
A_IPERF = "iperf3"
#: The loopback anchor again with the sender on this algorithm, beside the
#: host's: the kernel's default (``CONFIG_DEFAULT_TCP_CONG``), which does not
#: pace. With BBR (a pacing algorithm), one loopback stream carried a third of
#: what it carries with cubic on the host of 2026-12-03 (2.8 against 8.0 GB/s).
REFERENCE_CC = "cubic"
A_IPERF_CUBIC = f"iperf3-{REFERENCE_CC}"
#: The WS target again with the client's sockets on REFERENCE_CC (ws_client
#: --congestion): beside the target, not judged (a pacing sender's rate is
#: the client's TCP, not the server).
T_WS_CLIENT_REF = f"{T_WS}-client-{REFERENCE_CC}"
A_MSGSPEC = "msgspec-decode"
A_PACK = "msgspec-pack"
#: The latency rows' floor: the same load on a minimal C responder (bench/http_floor.c).
A_FLOOR = "lat-floor-c"
#: The latency target and its floor with wrk as the client instead of
#: bench/lat_client.c: beside the target (wrk's own tail shows in its p99).
T_LAT_WRK = f"{T_LAT}-wrk"
A_FLOOR_WRK = f"{A_FLOOR}-wrk"

#: How a ratio names its anchor in the tables.
ANCHOR_NAMES = {
    A_C64: "C",
    "c-4096B": "C",
    A_IPERF: "loopback TCP",
    A_IPERF_CUBIC: f"loopback TCP with {REFERENCE_CC}",
    A_MSGSPEC: "msgspec decode",
    T_BARE: "bare FastAPI",
    "bare-1-c1": "bare FastAPI",
}
#: Servers that are not the service as shipped (not held to its memory target):
#: the yardsticks, and granian (measured beside uvicorn; its supervisor process
#: counts in its tree's RSS).
NOT_SHIPPED = ("bare", "floor", "granian", "granian-bare", "local", "baseline")


@dataclass(frozen=True)
class Stat:
    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: list[float]) -> Stat | None:
        if not values:
            return None
        return cls(statistics.median(values), min(values), max(values))

    def fmt(self, scale: float = 1.0, digits: int = 2, unit: str = "") -> str:
        m, lo, hi = self.median / scale, self.low / scale, self.high / scale
        if lo == hi:
            return f"{m:.{digits}f}{unit}"
        return f"{m:.{digits}f}{unit} ({lo:.{digits}f}-{hi:.{digits}f})"

    def times(self, anchor: str) -> str:
        """``0.80x C (0.60-0.80)``: a ratio to the anchor named, with its spread."""
        return self.fmt(unit=f"x {anchor}")


@dataclass(frozen=True)
class Row:
    case: dict[str, Any]
    rate: Stat  # samples/s
    byte_rate: Stat | None  # bytes/s
    req_rate: Stat | None
    vs_anchor: Stat | None
    server_cpu: Stat | None  # percent of one CPU
    client_cpu: Stat | None
    p50_us: Stat | None
    p99_us: Stat | None
    peak_rss_mib: Stat | None
    # The service's own arrival-to-ack p99, a bucket bound of its histogram
    # (latency rows; bench.ackhist).
    own_p99_us: Stat | None = None

    @property
    def anchor_name(self) -> str:
        anchor = self.case.get("anchor") or ""
        return ANCHOR_NAMES.get(anchor, anchor)


def _per_round(doc: dict[str, Any], key: str) -> dict[int, dict[str, Any]]:
    return {r["round"]: r for r in doc["runs"] if r["key"] == key}


def _rate_of(run: dict[str, Any], measure: str) -> float:
    if measure == "bytes":
        return float(run.get("nbytes", 0)) / float(run["seconds"])
    return float(run["rate"])


def ratio(doc: dict[str, Any], num: str, den: str, measure: str = "samples") -> Stat | None:
    """rate(num) / rate(den), per round, then the median (and spread) of the rounds."""
    a, b = _per_round(doc, num), _per_round(doc, den)
    return Stat.of(
        [
            _rate_of(a[n], measure) / _rate_of(b[n], measure)
            for n in a
            if n in b and _rate_of(b[n], measure) > 0
        ]
    )


def summarize(doc: dict[str, Any]) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    for case in doc["cases"]:
        key = case["key"]
        runs = _per_round(doc, key)
        if not runs:
            continue
        network = case["server"] != "local"
        anchor = case.get("anchor")

        def stat(name: str, runs: dict[int, dict[str, Any]] = runs) -> Stat | None:
            vals = [r[name] for r in runs.values() if r.get(name) is not None]
            return Stat.of([float(v) for v in vals])

        def per_s(name: str, runs: dict[int, dict[str, Any]] = runs) -> Stat | None:
            return Stat.of([float(r.get(name) or 0) / r["seconds"] for r in runs.values()])

        rows[key] = Row(
            case=case,
            rate=Stat.of([r["rate"] for r in runs.values()]) or Stat(0, 0, 0),
            byte_rate=per_s("nbytes") if any(r.get("nbytes") for r in runs.values()) else None,
            req_rate=per_s("requests") if network else None,
            vs_anchor=ratio(doc, key, anchor, case.get("measure", "samples")) if anchor else None,
            server_cpu=Stat.of([100 * r["server_cpu_s"] / r["seconds"] for r in runs.values()])
            if network
            else None,
            client_cpu=Stat.of([100 * r["client_cpu_s"] / r["seconds"] for r in runs.values()])
            if network
            else None,
            p50_us=stat("latency_p50_us") if network else None,
            p99_us=stat("latency_p99_us") if network else None,
            peak_rss_mib=stat("peak_rss_mib") if network else None,
            own_p99_us=Stat.of(
                [
                    float(r["extra"]["server_ack_p99_le_us"])
                    for r in runs.values()
                    if "server_ack_p99_le_us" in r.get("extra", {})
                ]
            ),
        )
    return rows


Target = tuple[str, str, str, bool | None]


def _ratio_target(
    rows: dict[str, Row], key: str, what: str, goal: float, beside: str = ""
) -> list[Target]:
    """The row's ratio to its anchor against ``goal``; ``beside``: the measured
    cell also names the ratio to another anchor (not judged)."""
    row = rows.get(key)
    if row is None or row.vs_anchor is None:
        return []
    if row.case.get("measure") == "bytes" and row.byte_rate is not None:
        raw = row.byte_rate.fmt(1e9, unit=" GB/s")
    elif row.case["batch"] == 1:
        raw = row.req_rate.fmt(1e3, 1, unit=" k req/s") if row.req_rate else ""
    else:
        raw = row.rate.fmt(1e6, unit=" M samples/s")
    name = row.anchor_name
    if beside:
        raw += f"; {beside}"
    return [
        (
            what,
            f"{row.vs_anchor.times(name)}; {raw}",
            f">= {goal}x {name}",
            row.vs_anchor.median >= goal,
        )
    ]


def _floor(rows: dict[str, Row]) -> str:
    """The latency floor measured in the same run (what the host adds), if any."""
    floor = rows.get(A_FLOOR)
    if floor is None or not floor.p99_us or not floor.p50_us:
        return ""
    return (
        f" (host floor, a minimal C responder under the same load: p99 "
        f"{floor.p99_us.fmt(1e3, unit=' ms')}; p50 {floor.p50_us.fmt(1e3, unit=' ms')})"
    )


def _beside_wrk(rows: dict[str, Row]) -> str:
    """The latency target and its floor measured with wrk as the client, if run."""
    lat, floor = rows.get(T_LAT_WRK), rows.get(A_FLOOR_WRK)
    if lat is None or floor is None or not lat.p99_us or not floor.p99_us:
        return ""
    return (
        f"; with wrk as the client: p99 {lat.p99_us.fmt(1e3, unit=' ms')}, floor p99 "
        f"{floor.p99_us.fmt(1e3, unit=' ms')}"
    )


def _own(row: Row) -> str:
    """The service's own share of a latency row's p99 (its histogram), if read."""
    if row.own_p99_us is None:
        return ""
    return f"; the service's own arrival-to-ack p99 <= {row.own_p99_us.fmt(1e3, unit=' ms')}"


def _host_cc(doc: dict[str, Any]) -> str | None:
    """The host's TCP congestion control: when it is not REFERENCE_CC, the
    reference figures are named beside the targets (judged on the host's, as set)."""
    cc: str | None = doc.get("meta", {}).get("host", {}).get("tcp_congestion_control")
    return cc


def _beside_cubic(doc: dict[str, Any], rows: dict[str, Row], key: str) -> str:
    """A bytes row's ratio to loopback TCP with the sender on cubic."""
    cc = _host_cc(doc)
    if cc == REFERENCE_CC or A_IPERF_CUBIC not in rows or key not in rows:
        return ""
    r = ratio(doc, key, A_IPERF_CUBIC, "bytes")
    return f"{r.times(ANCHOR_NAMES[A_IPERF_CUBIC])} (host: {cc})" if r else ""


def _beside_client_cc(doc: dict[str, Any], rows: dict[str, Row]) -> str:
    """The WS target's ratio with its client's sender on cubic."""
    cc = _host_cc(doc)
    row = rows.get(T_WS_CLIENT_REF)
    if cc == REFERENCE_CC or row is None or row.vs_anchor is None:
        return ""
    times = row.vs_anchor.times(row.anchor_name)
    return f"{times} with the client's sender on {REFERENCE_CC} (host: {cc})"


def targets(doc: dict[str, Any], rows: dict[str, Row]) -> list[Target]:
    """(what, measured, target, met) rows of the targets table (issue #15's targets)."""
    out: list[Target] = []
    out += _ratio_target(
        rows,
        T_WS,
        "WS binary, 64 B samples, 64 KiB frames, 1 conn",
        0.8,
        _beside_client_cc(doc, rows),
    )
    out += _ratio_target(rows, T_HTTP, "HTTP binary, 64 B samples, 256 KiB bodies, 4 conns", 0.8)
    out += _ratio_target(
        rows,
        T_HTTP_4K,
        "HTTP binary, 4096 B samples, 256 KiB bodies, 4 conns",
        0.6,
        _beside_cubic(doc, rows, T_HTTP_4K),
    )
    out += _ratio_target(
        rows,
        T_WS_4K,
        "WS binary, 4096 B samples, 64 KiB frames, 1 conn",
        0.6,
        _beside_cubic(doc, rows, T_WS_4K),
    )
    out += _ratio_target(rows, T_JSON, "typed JSON, 1000 x 16 B samples a POST, 4 conns", 1.0)
    out += _ratio_target(rows, T_ONE, "one-sample JSON POST, 16 conns", 1.5)
    if (lat := rows.get(T_LAT)) is not None and lat.p99_us and lat.p50_us:
        out.append(
            (
                "ack latency, one batch of 100 x 64 B in flight, wait=committed (timer drain)",
                f"p99 {lat.p99_us.fmt(1e3, unit=' ms')}; p50 {lat.p50_us.fmt(1e3, unit=' ms')}"
                + _own(lat)
                + _floor(rows)
                + _beside_wrk(rows),
                "p99 <= 0.25 ms",
                lat.p99_us.median <= 250,
            )
        )
    extra = doc.get("extra", {})
    if (blocked := extra.get("blocked")) is not None:
        out.append(
            (
                "server CPU while a batch waits on a full ring",
                f"{blocked['cpu_percent']:.2f} % ({blocked['process_wakeups_per_s']:.0f} "
                "wake-ups/s)",
                "<= 5 %",
                blocked["cpu_percent"] <= 5,
            )
        )
    if (idle := extra.get("idle")) is not None:
        out.append(
            (
                "idle service (timer drain, no traffic)",
                f"{idle['timer_drains_per_s']:.1f} timer drains/s, {idle['cpu_percent']:.2f} % "
                f"CPU, {idle['process_wakeups_per_s']:.0f} process wake-ups/s",
                "<= 10 drains/s",
                idle["timer_drains_per_s"] <= 10,
            )
        )
    worst = max(
        (
            (r.peak_rss_mib.high, r.case["label"])
            for r in rows.values()
            if r.peak_rss_mib is not None and r.case["server"] not in NOT_SHIPPED
        ),
        default=None,
    )
    if worst is not None:
        out.append(
            (
                "peak RSS of the service under every row",
                f"{worst[0]:.0f} MiB at most ({worst[1]})",
                "<= 100 MiB",
                worst[0] <= 100,
            )
        )
    return out


def targets_table(rows: dict[str, Row], doc: dict[str, Any] | None = None) -> str:
    lines = ["| path | measured: median (min-max) | target | met |", "|---|---|---|:-:|"]
    for what, measured, goal, met in targets(doc, rows) if doc else []:
        mark = "—" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {what} | {measured} | {goal} | {mark} |")
    return "\n".join(lines) + "\n"


def twins(rows: dict[str, Row], prefix: str = "granian") -> list[tuple[Row, Row]]:
    """(row, twin) pairs: the twin's key is ``prefix-`` + the row's (granian's rows,
    or the baseline's: ``prefix="base"``)."""
    out = []
    server = "baseline" if prefix == "base" else prefix
    for key, row in rows.items():
        if row.case["server"].startswith(server) and key.startswith(f"{prefix}-"):
            base = rows.get(key.removeprefix(f"{prefix}-"))
            if base is not None:
                out.append((base, row))
    return out
