"""What PromQL expressions read: series selectors and grouping labels.

Test support for the deploy kit (``deploy/prometheus``, ``deploy/grafana``):
a scanner, not a PromQL parser -- it knows strings, ``[...]`` ranges,
``{...}`` matchers, function calls and the grouping keywords, which is all it
takes to list the series an expression selects. promtool checks the syntax
(``make lint``; the dashboard test runs the dashboard's expressions through
``promtool check rules`` too), so a scanner may assume well-formed input.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "ringbridge-rules.yaml"
DASHBOARD = REPO / "deploy" / "grafana" / "ringbridge.json"

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "inf", "nan", "group_left", "group_right", "atan2"}
)
#: Aggregations may be followed by ``by (...)`` rather than by their ``(``.
_AGGREGATIONS = frozenset(
    {"sum", "min", "max", "avg", "count", "group", "stddev", "stdvar", "topk", "bottomk"}
    | {"quantile", "count_values", "limitk", "limit_ratio"}
)
_GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_MATCHER = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"\s*,?')
#: Grafana's variables, replaced by what they stand for when a panel runs.
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


@dataclass(frozen=True)
class Matcher:
    label: str
    op: str
    value: str


@dataclass
class Selector:
    name: str | None  # None: a bare {...} (e.g. {__name__=~"..."})
    matchers: list[Matcher] = field(default_factory=list)


@dataclass
class Query:
    """One expression: the series it selects and the labels it groups or matches on."""

    expr: str
    where: str  # what holds it: a rule or a dashboard panel
    selectors: list[Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)


def _skip_string(s: str, i: int) -> int:
    quote = s[i]
    i += 1
    while s[i] != quote:
        i += 2 if s[i] == "\\" and quote != "`" else 1
    return i + 1


def _matchers(body: str) -> list[Matcher]:
    out: list[Matcher] = []
    pos = 0
    while pos < len(body.strip()):
        m = _MATCHER.match(body, pos)
        assert m is not None, f"cannot read the matchers {{{body}}} at {body[pos:]!r}"
        out.append(Matcher(m.group(1), m.group(2), m.group(3)))
        pos = m.end()
    return out


def scan(expr: str, where: str) -> Query:
    """The selectors and grouping labels of ``expr`` (Grafana variables allowed)."""
    q = Query(expr, where)
    s = expr
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c in "\"'`":
            i = _skip_string(s, i)
        elif c == "[":
            i = s.index("]", i) + 1
        elif c == "{":
            end = s.index("}", i)
            q.selectors.append(Selector(None, _matchers(s[i + 1 : end])))
            i = end + 1
        elif c.isdigit() or (c == "." and i + 1 < n and s[i + 1].isdigit()):
            while i < n and (s[i].isalnum() or s[i] == "."):
                i += 1  # numbers, exponents and duration units (5m, 1e3)
        elif _IDENT.match(s, i):
            m = _IDENT.match(s, i)
            assert m is not None
            word, i = m.group(0), m.end()
            j = i
            while j < n and s[j].isspace():
                j += 1
            nxt = s[j] if j < n else ""
            if word in _GROUPING and nxt == "(":
                end = s.index(")", j)
                q.grouping.update(x.strip() for x in s[j + 1 : end].split(",") if x.strip())
                i = end + 1
            elif nxt == "(" or word in _KEYWORDS or word in _AGGREGATIONS:
                continue  # a function, an aggregation or an operator keyword
            elif nxt == "{":
                end = s.index("}", j)
                q.selectors.append(Selector(word, _matchers(s[j + 1 : end])))
                i = end + 1
            else:
                q.selectors.append(Selector(word))
        else:
            i += 1
    return q


def rules() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(RULES.read_text())
    return doc


def rule_list() -> list[dict[str, Any]]:
    return [r for g in rules()["groups"] for r in g["rules"]]


def rule_queries() -> list[Query]:
    return [scan(r["expr"], r.get("alert") or r["record"]) for r in rule_list()]


def recorded_names() -> set[str]:
    return {r["record"] for r in rule_list() if "record" in r}


def alerts() -> list[dict[str, Any]]:
    return [r for r in rule_list() if "alert" in r]


def dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def dashboard_panels() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in dashboard()["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # panels of a collapsed row
    return out


def grafana_expr(expr: str) -> str:
    """``expr`` as Prometheus receives it: Grafana's interval variables replaced."""
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


def dashboard_queries() -> list[Query]:
    out = [
        scan(grafana_expr(t["expr"]), f"panel {p['title']!r} {t['refId']}")
        for p in dashboard_panels()
        for t in p.get("targets", [])
    ]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            # label_values(<selector>, <label>): the selector part is PromQL.
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["definition"])
            assert m is not None, var["definition"]
            q = scan(m.group(1), f"variable {var['name']}")
            q.grouping.add(m.group(2))
            out.append(q)
    return out
