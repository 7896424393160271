"""The alert rules are complete: each one documented, runbooked and unit-tested.

``make lint`` runs ``promtool check rules`` and ``promtool test rules``; these
check what promtool cannot: every alert has a severity, a summary, a
description and a runbook line in the README (and the README's runbook names
no alert that does not exist), every alert has a promtool test in which it
fires and one in which it stays quiet, and every recording rule is either
tested or used by an alert.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.support import promql

README = promql.REPO / "README.md"
RULE_TESTS = Path(__file__).with_name("ringbridge-rules.test.yaml")
_RUNBOOK_ROW = re.compile(r"^\| `(Ringbridge\w+)` \| (critical|warning) \| (.+) \| (.+) \|$")


def runbook() -> dict[str, tuple[str, str, str]]:
    """alert -> (severity, meaning, action) from the README's runbook table."""
    text = README.read_text()
    block = text[text.index("<!-- runbook:start -->") : text.index("<!-- runbook:end -->")]
    rows: dict[str, tuple[str, str, str]] = {}
    for line in block.splitlines():
        m = _RUNBOOK_ROW.match(line)
        if m:
            rows[m.group(1)] = (m.group(2), m.group(3), m.group(4))
    assert len(rows) >= 10, "the README's runbook table was not found or not parsed"
    return rows


def rule_tests() -> list[dict[str, Any]]:
    doc: dict[str, Any] = yaml.safe_load(RULE_TESTS.read_text())
    assert doc["rule_files"] == ["../../deploy/prometheus/ringbridge-rules.yaml"]
    tests: list[dict[str, Any]] = doc["tests"]
    return tests


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    alerts = promql.alerts()
    assert len(alerts) >= 10
    for a in alerts:
        name = a["alert"]
        assert name.startswith("Ringbridge"), name
        assert a["labels"]["severity"] in ("critical", "warning"), name
        notes = a["annotations"]
        assert set(notes) == {"summary", "description", "runbook"}, name
        assert notes["runbook"] == f"README.md, Operations > Runbook > {name}"
        assert "{{ $labels.instance }}" in notes["summary"], name


def test_the_readme_runbook_has_a_line_per_alert_and_no_other() -> None:
    rows = runbook()
    alerts = {a["alert"]: a for a in promql.alerts()}
    assert sorted(rows) == sorted(alerts)
    for name, (severity, _meaning, action) in rows.items():
        assert severity == alerts[name]["labels"]["severity"], name
        assert len(action) > 20, name


def test_every_alert_fires_in_one_promtool_test_and_stays_quiet_in_another() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for t in rule_tests():
        for case in t.get("alert_rule_test", []):
            (fired if case["exp_alerts"] else quiet).add(case["alertname"])
    names = {a["alert"] for a in promql.alerts()}
    assert names - fired == set(), "alerts never seen firing in a promtool test"
    assert names - quiet == set(), "alerts never seen staying quiet in a promtool test"


def test_every_recording_rule_is_tested_or_used_by_an_alert() -> None:
    tested = {
        s.name
        for t in rule_tests()
        for case in t.get("promql_expr_test", [])
        for s in promql.scan(case["expr"], "test").selectors
    }
    used = {
        s.name
        for q in promql.rule_queries()
        if q.where.startswith("Ringbridge")
        for s in q.selectors
    }
    assert promql.recorded_names() - tested - used == set()


def test_the_scanner_reads_selectors_grouping_and_matchers() -> None:
    q = promql.scan(
        'sum by (job, le) (rate(a_total{x=~"p|q", y!="z"}[5m])) / on (job) group_left '
        'b:rec:rate5m > bool 0.5 and {__name__=~"c_.+"} unless histogram_quantile(0.9, d)',
        "t",
    )
    got = [(s.name, [(m.label, m.op, m.value) for m in s.matchers]) for s in q.selectors]
    assert got == [
        ("a_total", [("x", "=~", "p|q"), ("y", "!=", "z")]),
        ("b:rec:rate5m", []),
        (None, [("__name__", "=~", "c_.+")]),
        ("d", []),
    ]
    assert q.grouping == {"job", "le"}
