"""Tables, plot and README block of the benchmark, from its results document.

Medians are over the interleaved rounds; ratios against the C producer are
taken per round (each round runs the C producer too) and then their median,
so a slow round slows both sides of its ratio.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"
RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"

T_WS = "ws-bin-64B-64KiB"
T_HTTP = "http-bin-64B-256KiB-c4"
T_JSON = "http-json-1000-c4"
T_ONE = "http-json-1-c16"
T_BARE = "bare-1-c16"


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


@dataclass(frozen=True)
class Row:
    case: dict[str, Any]
    rate: Stat
    req_rate: Stat | None
    vs_c: Stat | None
    server_cpu: Stat | None  # percent of one CPU
    client_cpu: Stat | None
    p50_us: Stat | None
    p99_us: Stat | None


def _per_round(doc: dict[str, Any], key: str) -> dict[int, dict[str, Any]]:
    return {r["round"]: r for r in doc["runs"] if r["key"] == key}


def summarize(doc: dict[str, Any]) -> dict[str, Row]:
    cases = {c["key"]: c for c in doc["cases"]}
    c_by_size = {c["size"]: c["key"] for c in doc["cases"] if c["path"] == "C libbpf"}
    rows: dict[str, Row] = {}
    for key, case in cases.items():
        runs = _per_round(doc, key)
        if not runs:
            continue
        base = _per_round(doc, c_by_size[case["size"]]) if case["size"] in c_by_size else {}
        ratios = [r["rate"] / base[n]["rate"] for n, r in runs.items() if n in base]
        network = case["server"] != "local"

        def stat(name: str, runs: dict[int, dict[str, Any]] = runs) -> Stat | None:
            vals = [r[name] for r in runs.values() if r.get(name) is not None]
            return Stat.of([float(v) for v in vals])

        rows[key] = Row(
            case=case,
            rate=Stat.of([r["rate"] for r in runs.values()]) or Stat(0, 0, 0),
            req_rate=Stat.of([r["requests"] / r["seconds"] for r in runs.values()])
            if network
            else None,
            vs_c=Stat.of(ratios) if key not in c_by_size.values() else None,
            server_cpu=Stat.of([100 * r["server_cpu_s"] / r["seconds"] for r in runs.values()])
            if network
            else None,
            client_cpu=Stat.of([100 * r["client_cpu_s"] / r["seconds"] for r in runs.values()])
            if network
            else None,
            p50_us=stat("latency_p50_us") if network else None,
            p99_us=stat("latency_p99_us") if network else None,
        )
    return rows


def _ratio_of(doc: dict[str, Any], num: str, den: str) -> Stat | None:
    a, b = _per_round(doc, num), _per_round(doc, den)
    return Stat.of([a[n]["rate"] / b[n]["rate"] for n in a if n in b])


def targets(doc: dict[str, Any], rows: dict[str, Row]) -> list[tuple[str, str, str, bool | None]]:
    """(what, measured, target, met) rows of the targets table."""
    out: list[tuple[str, str, str, bool | None]] = []

    def ratio_row(key: str, what: str, goal: float) -> None:
        row = rows.get(key)
        if row is None or row.vs_c is None:
            return
        out.append(
            (
                what,
                f"{row.vs_c.fmt(unit='x C')}; {row.rate.fmt(1e6, unit=' M/s')}",
                f">= {goal}x C",
                row.vs_c.median >= goal,
            )
        )

    ratio_row(T_WS, "WS binary, 64 B samples, 64 KiB frames (1 conn, window 16)", 0.7)
    ratio_row(T_HTTP, "HTTP binary, 64 B samples, 256 KiB bodies, 4 conns", 0.5)
    if (row := rows.get(T_JSON)) is not None:
        vs = f"; {row.vs_c.fmt(digits=3, unit='x C')} at 16 B" if row.vs_c else ""
        out.append(
            (
                "typed JSON, 1000 struct samples a POST, 4 conns",
                f"{row.rate.fmt(1e6, unit=' M samples/s')}{vs}",
                ">= 1 M/s (>= 0.1x C)",
                row.rate.median >= 1e6,
            )
        )
    if (one := _ratio_of(doc, T_ONE, T_BARE)) is not None:
        out.append(
            (
                "one-sample JSON POST, 16 conns",
                f"{one.fmt(unit='x bare FastAPI')}; "
                f"{rows[T_ONE].rate.fmt(1e3, 1, unit=' k req/s')}",
                ">= 0.8x bare",
                one.median >= 0.8,
            )
        )
    if (blocked := doc["extra"].get("blocked")) is not None:
        out.append(
            (
                "server CPU while a batch waits on a full ring",
                f"{blocked['cpu_percent']:.2f} % ({blocked['process_wakeups_per_s']:.0f} "
                "wake-ups/s)",
                "<= 5 %",
                blocked["cpu_percent"] <= 5,
            )
        )
    if (idle := doc["extra"].get("idle")) is not None:
        out.append(
            (
                "idle service (timer drain, no traffic)",
                f"{idle['cpu_percent']:.2f} % CPU, {idle['timer_drains_per_s']:.0f} timer "
                f"drains/s, {idle['process_wakeups_per_s']:.0f} process wake-ups/s",
                "~nothing",
                None,
            )
        )
    return out


def targets_table(rows: dict[str, Row], doc: dict[str, Any] | None = None) -> str:
    lines = ["| path | measured: median (min-max) | target | met |", "|---|---|---|:-:|"]
    for what, measured, goal, met in targets(doc or {}, rows) if doc else []:
        mark = "—" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {what} | {measured} | {goal} | {mark} |")
    return "\n".join(lines) + "\n"


def _cell(s: Stat | None, scale: float = 1.0, digits: int = 2) -> str:
    return "" if s is None else s.fmt(scale, digits)


def throughput_table(rows: dict[str, Row]) -> str:
    lines = [
        "| path | samples/s | vs C | requests/s | server CPU % | client CPU % | p50 / p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows.values():
        if row.case["group"] != "throughput":
            continue
        lat = ""
        if row.p50_us is not None and row.p99_us is not None:
            lat = f"{row.p50_us.median / 1e3:.2f} / {row.p99_us.median / 1e3:.2f}"
        rate = (
            row.rate.fmt(1e6, unit=" M")
            if row.rate.median >= 1e5
            else row.rate.fmt(1e3, 1, unit=" k")
        )
        lines.append(
            f"| {row.case['label']} | {rate} | {_cell(row.vs_c)} | "
            f"{_cell(row.req_rate, digits=0)} | {_cell(row.server_cpu, digits=0)} | "
            f"{_cell(row.client_cpu, digits=0)} | {lat} |"
        )
    return "\n".join(lines) + "\n"


def latency_table(rows: dict[str, Row]) -> str:
    lines = [
        "| path (one batch in flight) | p50 ms | p99 ms | batches/s |",
        "|---|---:|---:|---:|",
    ]
    for row in rows.values():
        if row.case["group"] != "latency" or row.p50_us is None or row.p99_us is None:
            continue
        lines.append(
            f"| {row.case['label']} | {_cell(row.p50_us, 1e3)} | {_cell(row.p99_us, 1e3)} | "
            f"{_cell(row.req_rate, digits=0)} |"
        )
    return "\n".join(lines) + "\n"


def _intro(doc: dict[str, Any]) -> str:
    m = doc["meta"]
    return (
        f"Generated by `bench/run.py` on {m['generated']} in {m['elapsed_s']:.0f} s: Linux "
        f"{m['kernel']}, {m['cpus']} CPUs, Python {m['python']}; {m['rounds']} interleaved "
        f"round(s), {m['seconds_per_run']} s per network run; cells are the median of the "
        "rounds with the spread (min-max) in brackets. Load generators: `wrk` (HTTP) and "
        "`build/ws_client` (WebSocket, pre-masked frames); client and server share the "
        "machine's CPUs. CPU % is of one CPU."
    )


def _extras(doc: dict[str, Any]) -> str:
    rss = doc["extra"].get("peak_rss_mib", {})
    parts = [f"{name} {mib:.0f} MiB" for name, mib in sorted(rss.items())]
    return f"Peak RSS of the servers (VmHWM): {', '.join(parts)}.\n" if parts else ""


def markdown_block(doc: dict[str, Any], rows: dict[str, Row]) -> str:
    return "\n".join(
        [
            _intro(doc),
            "",
            "### Targets",
            "",
            targets_table(rows, doc),
            "### Throughput (kick drain; C and Python in-process on their own ring)",
            "",
            throughput_table(rows),
            "### Latency (wait=committed: the ack; wait=consumed: the kernel passed it)",
            "",
            latency_table(rows),
            _extras(doc),
        ]
    )


def _replace_block(text: str, start: str, end: str, block: str, path: Path) -> str:
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.strip() == start]
    ends = [i for i, line in enumerate(lines) if line.strip() == end]
    if len(starts) != 1 or len(ends) != 1 or starts[0] >= ends[0]:
        raise SystemExit(f"bench: {path} needs exactly one {start!r} line followed by one {end!r}")
    return "".join(lines[: starts[0] + 1]) + block + "".join(lines[ends[0] :])


def write_markdown(path: Path, doc: dict[str, Any], rows: dict[str, Row]) -> None:
    """Rewrites the generated block of ``path`` (created if missing); keeps the rest."""
    block = markdown_block(doc, rows)
    if path.exists() and RESULTS_START in path.read_text():
        text = _replace_block(path.read_text(), RESULTS_START, RESULTS_END, block, path)
    else:
        text = f"# ringbridge benchmark\n\n{RESULTS_START}\n{block}{RESULTS_END}\n"
    path.write_text(text)


def check_readme(path: Path) -> None:
    _replace_block(path.read_text(), README_START, README_END, "", path)


def readme_block(doc: dict[str, Any], rows: dict[str, Row]) -> str:
    return targets_table(rows, doc) + "\n" + throughput_table(rows)


def update_readme(path: Path, block: str) -> None:
    path.write_text(_replace_block(path.read_text(), README_START, README_END, block, path))


def plot(path: Path, doc: dict[str, Any], rows: dict[str, Row]) -> bool:
    """samples/s per path and batch size (log scale); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    series: dict[str, dict[int, float]] = {}
    for row in rows.values():
        c = row.case
        if c["group"] != "throughput" or c["server"] != "kick" or c["batch"] not in (1, 100, 1000):
            continue
        if c["size"] not in (16, 64):
            continue
        name = f"{c['path']} ({c['clients']} conn{'s' if c['clients'] > 1 else ''})"
        series.setdefault(name, {})[c["batch"]] = row.rate.median
    fig, ax = plt.subplots(figsize=(9, 5))
    batches = [1, 100, 1000]
    width = 0.8 / max(1, len(series))
    for i, (name, vals) in enumerate(sorted(series.items())):
        xs = [b + (i - len(series) / 2) * width for b in range(len(batches))]
        ax.bar(xs, [vals.get(b, 0) for b in batches], width, label=name)
    for key, style in (("c-64B", "--"), ("c-16B", ":")):
        if key in rows:
            ax.axhline(
                rows[key].rate.median,
                linestyle=style,
                color="black",
                label=f"C libbpf, {rows[key].case['size']} B",
            )
    ax.set_xticks(range(len(batches)), [f"{b} samples/batch" for b in batches])
    ax.set_yscale("log")
    ax.set_ylabel("samples/s (median of rounds)")
    ax.set_title("ringbridge: samples/s per path and batch size (64 B binary, 16 B JSON)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
