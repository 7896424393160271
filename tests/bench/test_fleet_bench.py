"""The fleet benchmark still works: its quick mode end to end (no speed asserted)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import fleet

from ..conftest import nats_binary_or_skip
from .quick import REPO, run_quick


@pytest.mark.kernel
@pytest.mark.nats
@pytest.mark.slow
def test_quick_fleet_bench_fans_out_and_feeds_one_node_both_ways(tmp_path: Path) -> None:
    nats_binary_or_skip()
    results = (REPO / "bench" / "results.md").read_text()
    run_quick("bench.fleet", tmp_path)
    doc = json.loads((tmp_path / "fleet-results.json").read_text())
    assert [f["mode"] for f in doc["fanout"]] == ["durable", "pins"]
    for f in doc["fanout"]:
        assert f["batches"], f
        for b in f["batches"]:
            # Every node committed every batch, after it was published.
            assert len(b["latencies_ms"]) == f["nodes"]
            assert 0 < b["p50_ms"] <= b["p99_ms"] <= b["all_ms"]
    for t in doc["throughput"]:
        for way in ("nats", "http_c1", "http_c4"):
            assert t[way]["samples_per_s"] > 0, (t["shape"], way)
    md = (tmp_path / "results.md").read_text()
    assert fleet.START in md and "fan-out of one batch" in md
    # A quick run never touches tracked files.
    assert (REPO / "bench" / "results.md").read_text() == results
