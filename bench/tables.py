"""The benchmark's markdown (``results.md``, README's block) and plot, from its summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.report import T_LAT, Row, Stat, ratio, targets_table, twins

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"
RESULTS_START = "<!-- results:start -->"
RESULTS_END = "<!-- results:end -->"


def _cell(s: Stat | None, scale: float = 1.0, digits: int = 2) -> str:
    return "" if s is None else s.fmt(scale, digits)


def _rate(row: Row) -> str:
    if row.case["path"].startswith("loopback TCP"):
        return ""
    if row.rate.median >= 1e5:
        return row.rate.fmt(1e6, unit=" M")
    return row.rate.fmt(1e3, 1, unit=" k")


def _vs(row: Row) -> str:
    return "" if row.vs_anchor is None else row.vs_anchor.times(row.anchor_name)


def _latency(row: Row) -> str:
    if row.p50_us is None or row.p99_us is None:
        return ""
    return f"{row.p50_us.median / 1e3:.2f} / {row.p99_us.median / 1e3:.2f}"


def throughput_table(rows: dict[str, Row]) -> str:
    lines = [
        "| path | samples/s | GB/s | vs anchor | requests/s | server CPU % | client CPU % "
        "| p50 / p99 ms | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows.values():
        if row.case["group"] != "throughput":
            continue
        lines.append(
            f"| {row.case['label']} | {_rate(row)} | {_cell(row.byte_rate, 1e9)} | {_vs(row)} | "
            f"{_cell(row.req_rate, digits=0)} | {_cell(row.server_cpu, digits=0)} | "
            f"{_cell(row.client_cpu, digits=0)} | {_latency(row)} | "
            f"{_cell(row.peak_rss_mib, digits=0)} |"
        )
    return "\n".join(lines) + "\n"


def latency_table(rows: dict[str, Row]) -> str:
    lines = [
        "| path (one batch in flight) | p50 ms | p99 ms | the service's own p99 ms "
        "(arrival to ack, at most: its histogram's bucket) | batches/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows.values():
        if row.case["group"] != "latency" or row.p50_us is None or row.p99_us is None:
            continue
        own = _cell(row.own_p99_us, 1e3)
        lines.append(
            f"| {row.case['label']} | {_cell(row.p50_us, 1e3)} | {_cell(row.p99_us, 1e3)} | "
            f"{own} | {_cell(row.req_rate, digits=0)} |"
        )
    return "\n".join(lines) + "\n"


def _cpu_per_request_us(row: Row) -> float | None:
    if row.server_cpu is None or row.req_rate is None or row.req_rate.median <= 0:
        return None
    return 1e4 * row.server_cpu.median / row.req_rate.median


def granian_table(doc: dict[str, Any], rows: dict[str, Row]) -> str:
    """uvicorn and granian side by side on the same rows (empty without granian rows)."""
    pairs = twins(rows)
    if not pairs:
        return ""
    lines = [
        "| row | uvicorn | granian | granian / uvicorn | server CPU µs a request "
        "(uvicorn / granian) | p99 ms (uvicorn / granian) | peak RSS MiB (uvicorn / granian) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for base, gr in pairs:
        measure = base.case.get("measure", "samples")
        rel = ratio(doc, gr.case["key"], base.case["key"], measure)
        unit: tuple[float, str] = (1e9, " GB/s") if measure == "bytes" else (1e6, " M/s")
        if base.case["batch"] == 1:
            cells = [_cell(r.req_rate, digits=0) + " req/s" for r in (base, gr)]
        elif measure == "bytes":
            cells = [_cell(r.byte_rate, unit[0]) + unit[1] for r in (base, gr)]
        else:
            cells = [r.rate.fmt(unit[0], unit=unit[1]) for r in (base, gr)]
        cpu = [_cpu_per_request_us(r) for r in (base, gr)]
        cpu_cell = " / ".join("" if c is None else f"{c:.0f}" for c in cpu)
        p99 = " / ".join(
            "" if r.p99_us is None else f"{r.p99_us.median / 1e3:.2f}" for r in (base, gr)
        )
        rss = " / ".join(_cell(r.peak_rss_mib, digits=0) for r in (base, gr))
        label = base.case["label"]
        lines.append(
            f"| {label} | {cells[0]} | {cells[1]} | {_cell(rel)} | {cpu_cell} | {p99} | {rss} |"
        )
    return "\n".join(lines) + "\n"


def baseline_table(doc: dict[str, Any], rows: dict[str, Row]) -> str:
    """This tree against the ``--baseline`` checkout, row by row: rate, and server
    CPU per request (the steadier figure on a shared machine)."""
    pairs = twins(rows, "base")
    if not pairs:
        return ""
    lines = [
        "| row | this tree | baseline | rate this / baseline | server CPU µs a request "
        "(this / baseline) | CPU this / baseline |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for new, old in pairs:
        rel = ratio(doc, new.case["key"], old.case["key"], "samples")
        cells = [_cell(r.req_rate, digits=0) + " req/s" for r in (new, old)]
        cpu = [_cpu_per_request_us(r) for r in (new, old)]
        cpu_cell = " / ".join("" if c is None else f"{c:.1f}" for c in cpu)
        cpu_rel = f"{cpu[0] / cpu[1]:.2f}" if cpu[0] and cpu[1] else ""
        lines.append(
            f"| {new.case['label']} | {cells[0]} | {cells[1]} | {_cell(rel)} | {cpu_cell} "
            f"| {cpu_rel} |"
        )
    return "\n".join(lines) + "\n"


def steal_line(doc: dict[str, Any]) -> str:
    """The host's steal time over the timed rows (what other guests took from
    this VM's CPUs): it moves every row, the latency ones most. "" when not recorded."""
    runs = [r for r in doc["runs"] if r.get("steal_pct") is not None]
    if not runs:
        return ""
    pcts = sorted(r["steal_pct"] for r in runs)
    top = max(runs, key=lambda r: r["steal_pct"])
    lat = [f"{r['steal_pct']:.1f}" for r in runs if r["key"] == T_LAT]
    rounds = f"; the latency target's rounds {', '.join(lat)} %" if lat else ""
    return (
        f"Steal time (the hypervisor's, `/proc/stat`) over the timed rows: median "
        f"{pcts[len(pcts) // 2]:.1f} %, highest {top['steal_pct']:.1f} % ({top['key']}, round "
        f"{top['round'] + 1}){rounds}."
    )


def _intro(doc: dict[str, Any]) -> str:
    m = doc["meta"]
    host = m.get("host_line") or f"{m['cpus']} CPUs"
    return (
        f"Generated by `bench/run.py` on {m['generated']} in {m['elapsed_s']:.0f} s. "
        f"Host: {host}; Linux {m['kernel']}, Python {m['python']}. {m['rounds']} interleaved "
        f"round(s), {m['seconds_per_run']} s per network run; cells are the median of the "
        "rounds with the spread (min-max) in brackets; a ratio is taken per round against the "
        "anchor row of the same round. Load generators: `wrk` (HTTP) and `build/ws_client` "
        "(WebSocket, pre-masked frames); client and server share the machine's CPUs. CPU % is "
        "of one CPU; peak RSS is the server's VmHWM over that row alone. " + steal_line(doc)
    ).rstrip()


def _extras(doc: dict[str, Any]) -> str:
    rss = doc["extra"].get("peak_rss_mib", {})
    parts = [f"{name} {mib:.0f} MiB" for name, mib in sorted(rss.items())]
    if not parts:
        return ""
    return f"Peak RSS of the servers over the whole run (VmHWM): {', '.join(parts)}.\n"


def markdown_block(doc: dict[str, Any], rows: dict[str, Row]) -> str:
    parts = [
        _intro(doc),
        "",
        "### Targets",
        "",
        targets_table(rows, doc),
        "### Throughput (kick drain; anchors in process, C and Python on their own ring)",
        "",
        throughput_table(rows),
        "### Latency (wait=committed: the ack; wait=consumed: the kernel passed it)",
        "",
        latency_table(rows),
    ]
    if granian := granian_table(doc, rows):
        parts += ["### uvicorn and granian, same app, same rows", "", granian]
    parts.append(_extras(doc))
    return "\n".join(parts)


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
    m = doc["meta"]
    head = f"Host: {m.get('host_line') or m['cpus']}; {m['rounds']} interleaved round(s).\n\n"
    if steal := steal_line(doc):
        head += steal + "\n\n"
    granian = granian_table(doc, rows)
    return (
        head
        + targets_table(rows, doc)
        + "\n"
        + throughput_table(rows)
        + ("\n" + granian if granian else "")
    )


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
        if c["size"] not in (16, 64) or c["clients"] not in (1, 16):
            continue
        name = f"{c['path']} ({c['clients']} conn{'s' if c['clients'] > 1 else ''})"
        series.setdefault(name, {})[c["batch"]] = row.rate.median
    fig, ax = plt.subplots(figsize=(9, 5))
    batches = [1, 100, 1000]
    width = 0.8 / max(1, len(series))
    for i, (name, vals) in enumerate(sorted(series.items())):
        xs = [b + (i - len(series) / 2) * width for b in range(len(batches))]
        ax.bar(xs, [vals.get(b, 0) for b in batches], width, label=name)
    for key, style in (("c-64B", "--"), ("c-16B", ":"), ("msgspec-decode", "-.")):
        if key in rows:
            ax.axhline(
                rows[key].rate.median,
                linestyle=style,
                color="black",
                label=rows[key].case["label"],
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
