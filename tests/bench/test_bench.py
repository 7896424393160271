"""The benchmark still works: its quick mode end to end, and its arithmetic.

No speed is asserted here (performance is measured by ``make bench``, never
by a test); the quick run proves that every load generator, server and
report step runs and that the counts add up (the bench itself fails a run
whose kernel counters disagree with what the clients were acked).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import report

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.kernel
@pytest.mark.slow
def test_quick_bench_runs_every_path(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    out = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", f"--out-dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    doc = json.loads((tmp_path / "results.json").read_text())
    keys = {c["key"] for c in doc["cases"]}
    assert {report.T_WS, report.T_HTTP, report.T_JSON, report.T_ONE, report.T_BARE} <= keys
    assert {r["key"] for r in doc["runs"]} == keys
    for r in doc["runs"]:
        assert r["samples"] > 0 and r["seconds"] > 0, r
    for r in doc["runs"]:
        if r["key"] not in ("c-64B",):
            assert r["latency_p99_us"] >= r["latency_p50_us"] > 0, r
    assert set(doc["extra"]) == {"idle", "blocked", "peak_rss_mib"}
    assert doc["extra"]["idle"]["timer_drains_per_s"] >= 0
    md = (tmp_path / "results.md").read_text()
    assert report.RESULTS_START in md and "### Targets" in md
    assert "one-sample JSON POST" in md
    # A quick run never touches tracked files.
    assert (REPO / "README.md").read_text() == readme


def _doc(rates: dict[str, list[float]]) -> dict[str, Any]:
    cases = [
        {
            "key": "c-64B",
            "path": "C libbpf",
            "server": "local",
            "size": 64,
            "batch": 0,
            "clients": 1,
            "group": "throughput",
            "label": "C",
        },
        {
            "key": report.T_WS,
            "path": "WS binary",
            "server": "kick",
            "size": 64,
            "batch": 910,
            "clients": 1,
            "group": "throughput",
            "label": "WS",
        },
    ]
    runs = [
        {
            "key": key,
            "round": i,
            "rate": rate,
            "samples": int(rate),
            "seconds": 1.0,
            "requests": 10,
            "server_cpu_s": 0.5,
            "client_cpu_s": 0.1,
            "latency_p50_us": 100.0,
            "latency_p99_us": 200.0,
        }
        for key, series in rates.items()
        for i, rate in enumerate(series)
    ]
    return {"cases": cases, "runs": runs, "extra": {}}


def test_ratios_are_per_round_then_median() -> None:
    # Round 1 is slow for both sides: its ratio is still 0.8.
    doc = _doc({"c-64B": [10.0, 5.0, 10.0], report.T_WS: [8.0, 4.0, 6.0]})
    rows = report.summarize(doc)
    ws = rows[report.T_WS]
    assert ws.vs_c is not None
    assert (ws.vs_c.median, ws.vs_c.low, ws.vs_c.high) == (0.8, 0.6, 0.8)
    assert ws.rate.median == 6.0 and ws.server_cpu is not None and ws.server_cpu.median == 50
    table = report.targets_table(rows, doc)
    assert "0.80x C" in table and "**no**" not in table.split("WS binary")[1].split("\n")[0]


def test_a_missed_target_is_marked() -> None:
    doc = _doc({"c-64B": [10.0], report.T_WS: [5.0]})
    line = next(
        x for x in report.targets_table(report.summarize(doc), doc).splitlines() if "WS binary" in x
    )
    assert "0.50x C" in line and line.endswith("| **no** |")
