"""The operations kit cannot drift from the metrics it is built on.

Every series the alert rules (``deploy/prometheus``) and the Grafana
dashboard (``deploy/grafana``) select must exist on the ``/metrics`` of real
servers -- the built-in consumer with traffic on every path, a user's
object exporting maps (the dashboard's "exported maps" panel), an
upstream-style object whose replies go out through an event map (the events
series), and a node fed from a real JetStream (``--nats``: the fleet rules
and panels) -- with the labels they match and group on, and label values they
name (a literal, or each branch of an alternation of literals, must be a
value some live series takes: every ``reason`` of the events and connections
counters is exported from the start, at 0, so no contrived traffic is
needed for a rule to name it); every such
series must be in the README's metrics table (which
``test_readme_metrics.py`` holds equal to ``/metrics``). The dashboard's
expressions also go through ``promtool check rules`` for their syntax.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import websockets
import yaml
from prometheus_client.parser import text_string_to_metric_families
from websockets.sync.client import connect

from tests.support import promql, upstream
from tests.support.byo import EXAMPLE_OBJ, ensure_built
from tests.support.natsserver import NatsServer

from .conftest import ServerFactory, binary_batch
from .fleetlive import fleet_metrics
from .test_readme_metrics import readme_series

pytestmark = [pytest.mark.kernel, pytest.mark.nats]

#: Series Prometheus makes itself: no exporter serves them.
SYNTHETIC = {"up": "the scrape's own health series"}
#: Labels a scrape adds to every series (the target's), or that histograms carry.
TARGET_LABELS = {"job", "instance"}
PROMTOOL = promql.REPO / "build" / "tools" / "promtool"


@dataclass
class Live:
    """What real servers export: sample name -> label name -> values seen."""

    labels: dict[str, dict[str, set[str]]] = field(default_factory=dict)
    families: dict[str, str] = field(default_factory=dict)  # sample name -> README name

    def add(self, text: str) -> None:
        for fam in text_string_to_metric_families(text):
            readme_name = fam.name + "_total" if fam.type == "counter" else fam.name
            for s in fam.samples:
                self.families[s.name] = readme_name
                seen = self.labels.setdefault(s.name, defaultdict(set))
                for k, v in s.labels.items():
                    seen[k].add(v)


async def _ws_traffic(ws_url: str) -> None:
    async with websockets.connect(ws_url, compression=None) as ws:
        await ws.send('{"id": 1, "samples": [{"kind": 4, "value": 1}]}')
        await ws.recv()
        await ws.send(binary_batch([(5, 2), (5, 3)]))
        await ws.recv()


@pytest.fixture
def live(make_server: ServerFactory, pin_dir: Path, nats_server: NatsServer) -> Live:
    out = Live()
    srv = make_server(ring_size=1 << 20, drain="kick")
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        ok = c.post("/v1/samples?wait=consumed", json={"samples": [{"kind": 3, "value": 9}]})
        assert ok.status_code == 200, ok.text
        binary = c.post(
            "/v1/samples",
            content=binary_batch([(6, 1)]),
            headers={"content-type": "application/octet-stream"},
        )
        assert binary.status_code == 200, binary.text
        assert c.post("/v1/samples", json={"samples": [{"kind": "x"}]}).status_code == 422
        asyncio.run(_ws_traffic(srv.ws_url))
        out.add(c.get("/metrics").text)
    ensure_built()
    byo = make_server(
        pin_dir=pin_dir.parent / "byo",
        bpf_object=EXAMPLE_OBJ,
        ring_size=256 * 1024,
        map_size={"slots": 1024},
        sample_type="ops_msg",
        drain="kick",
        drain_program="ops_drain",
        export_map=["slots", "op_stats"],
    )
    with httpx.Client(base_url=byo.url, timeout=10) as c:
        r = c.post(
            "/v1/samples?wait=consumed",
            json={"samples": [{"op": "OPS_SET", "set": {"name": "answer", "value": 42}}]},
        )
        assert r.status_code == 200, r.text
        out.add(c.get("/metrics").text)
    out.add(_events_metrics(make_server, pin_dir.parent / "events"))
    out.add(fleet_metrics(make_server, nats_server, pin_dir=pin_dir.parent / "fleet", drain="kick"))
    return out


def _events_metrics(make_server: ServerFactory, pin_dir: Path) -> str:
    """/metrics of the selftest-style protocol object, its replies read out of its
    kernel ring buffer (``--event-map``) while a subscriber is connected."""
    upstream.ensure_built()
    srv = make_server(
        pin_dir=pin_dir,
        bpf_object=upstream.PROTO_OBJ,
        ring_size=64 * 1024,
        map_size={"kernel_ringbuf": 64 * 1024},
        sample_header=upstream.PROTO_HEADER,
        sample_type="test_msg",
        event_map=["kernel_ringbuf=test_reply"],
        # The program acts for this process only (upstream's skel->bss->pid).
        set_global={"pid": os.getpid()},
    )
    ws_url = srv.url.replace("http", "ws", 1) + "/v1/events?map=kernel_ringbuf"
    with httpx.Client(base_url=srv.url, timeout=10) as c, connect(ws_url) as sub:
        sample = {"msg_op": "TEST_MSG_OP_INC64", "operand_64": 5}
        r = c.post("/v1/samples", json={"samples": [sample]})
        assert r.status_code == 200, r.text
        upstream.prctl()  # the program drains on this syscall and replies
        reply = json.loads(sub.recv(timeout=10))
        assert reply["value"]["kern_mutated"] == 5, reply
        return c.get("/metrics").text


def _problems(queries: list[promql.Query], live: Live, recorded: set[str]) -> list[str]:
    problems: list[str] = []
    for q in queries:
        used_labels: set[str] = set()
        for sel in q.selectors:
            if sel.name is None:
                (name_re,) = [m.value for m in sel.matchers if m.label == "__name__"]
                if not any(re.fullmatch(name_re, n) for n in live.labels):
                    problems.append(f"{q.where}: no live series matches __name__=~{name_re!r}")
                continue
            if sel.name in recorded or sel.name in SYNTHETIC:
                continue
            have = live.labels.get(sel.name)
            if have is None:
                problems.append(f"{q.where}: {sel.name} is not on /metrics")
                continue
            used_labels |= set(have)
            for m in sel.matchers:
                if m.label in TARGET_LABELS:
                    continue
                if m.label not in have:
                    problems.append(f"{q.where}: {sel.name} has no label {m.label!r}")
                elif m.op in ("=", "=~") and re.fullmatch(r"[\w.+-]+(\|[\w.+-]+)*", m.value):
                    # A literal or an alternation of literals: each one must occur.
                    missing = set(m.value.split("|")) - have[m.label]
                    if missing:
                        problems.append(
                            f"{q.where}: {sel.name}{{{m.label}}} never takes {sorted(missing)}"
                        )
        stray = q.grouping - used_labels - TARGET_LABELS - {"le"}
        names = {s.name for s in q.selectors}
        if stray and not names & recorded:
            problems.append(f"{q.where}: groups on labels no selected series has: {sorted(stray)}")
    return problems


def test_every_series_the_rules_use_is_on_a_live_metrics(live: Live) -> None:
    queries = promql.rule_queries()
    assert len(queries) >= 15
    assert _problems(queries, live, promql.recorded_names()) == []


def test_every_series_the_dashboard_uses_is_on_a_live_metrics(live: Live) -> None:
    queries = promql.dashboard_queries()
    assert len(queries) >= 30
    assert _problems(queries, live, set()) == []


def test_the_readme_metrics_table_lists_every_series_the_kit_uses(live: Live) -> None:
    table = readme_series()
    used = {
        s.name
        for q in promql.rule_queries() + promql.dashboard_queries()
        for s in q.selectors
        if s.name is not None and s.name not in promql.recorded_names() and s.name not in SYNTHETIC
    }
    assert used, "no series found in the rules and dashboard"
    missing = {live.families[n] for n in used} - set(table)
    assert missing == set(), f"used by rules or dashboard but not in the README table: {missing}"


def test_the_scanner_fails_on_a_series_that_does_not_exist(live: Live) -> None:
    # The checks above pass only if they can fail: a misspelt name, a label the
    # series lacks and a label value it never takes are all reported.
    bad = [
        promql.scan("rate(ringbridge_samples_comitted_total[5m])", "typo"),
        promql.scan('ringbridge_batches_rejected_total{code="x"}', "label"),
        promql.scan('ringbridge_kernel_drain_errors_total{cause=~"EINVAL|EINVALL"}', "value"),
        promql.scan("sum by (transport) (ringbridge_ring_free_bytes)", "grouping"),
        promql.scan('ringbridge_events_lost_total{reason="slow_subscribers"}', "events"),
        promql.scan('ringbridge_connections_closed_total{reason=~"limit_refused|limit"}', "conns"),
        promql.scan('ringbridge_ring_fault{cause="foreign"}', "fault"),
    ]
    problems = _problems(bad, live, set())
    kinds = ["typo", "label", "value", "grouping", "events", "conns", "fault"]
    assert [p.split(":")[0] for p in problems] == kinds, problems


def test_dashboard_expressions_are_valid_promql(tmp_path: Path) -> None:
    if not PROMTOOL.exists():
        subprocess.run(["make", "-s", "-C", str(promql.REPO), "promtool"], check=True)
    # As recording rules, so that promtool parses each one (no server needed).
    rules = [
        {"record": f"dashboard:query:{i}", "expr": q.expr}
        for i, q in enumerate(promql.dashboard_queries())
    ]
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    r = subprocess.run([str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(rules)} rules found" in r.stdout
