"""The README's metrics table lists exactly the series ``/metrics`` exports.

The table (between ``<!-- metrics:start -->`` and ``<!-- metrics:end -->``)
names each series with its labels and type; a real server in each drain mode,
with a committed sample and a rejected batch (so labelled series have
samples), must export exactly those names, with those labels and types. The
``ringbridge_nats_*`` rows are the fleet front door's: exactly those are
added by ``--nats`` (a server fed by a real JetStream), and no other server
has them.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ServerFactory
from .fleetlive import fleet_server

pytestmark = pytest.mark.kernel

README = Path(__file__).resolve().parents[2] / "README.md"
_ROW = re.compile(r"^\| `((?:ringbridge|process)_[a-z_]+)(?:\{([a-z_,]+)\})?` \| (\w+) \| .* \|$")

Series = dict[str, tuple[str, frozenset[str]]]


def readme_series() -> Series:
    """name -> (type, label names) from the README table."""
    text = README.read_text()
    block = text[text.index("<!-- metrics:start -->") : text.index("<!-- metrics:end -->")]
    out: Series = {}
    for line in block.splitlines():
        m = _ROW.match(line)
        if m:
            labels = frozenset(m.group(2).split(",")) if m.group(2) else frozenset()
            out[m.group(1)] = (m.group(3), labels)
    assert len(out) > 20, "the README's metrics table was not found or not parsed"
    return out


NATS_PREFIX = "ringbridge_nats_"


@pytest.mark.parametrize("drain", ["kick", "timer", pytest.param("nats", marks=pytest.mark.nats)])
def test_readme_lists_exactly_the_exported_series(
    make_server: ServerFactory, drain: str, request: pytest.FixtureRequest
) -> None:
    if drain == "nats":
        srv = fleet_server(
            make_server, request.getfixturevalue("nats_server"), ring_size=1 << 20, drain="kick"
        )
    else:
        srv = make_server(ring_size=1 << 20, drain=drain)
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        assert c.post("/v1/samples", json={"samples": [{"kind": 3, "value": 9}]}).is_success
        assert c.post("/v1/samples", json={"samples": [{"kind": "x"}]}).status_code == 422
        text = c.get("/metrics").text
    got: Series = {}
    for fam in text_string_to_metric_families(text):
        # The parser strips a counter's _total; the README names the series.
        name = fam.name + "_total" if fam.type == "counter" else fam.name
        labels = frozenset(k for s in fam.samples for k in s.labels if k != "le")
        got[name] = (fam.type, labels)
    want = readme_series()
    if drain != "nats":
        want = {k: v for k, v in want.items() if not k.startswith(NATS_PREFIX)}
    assert sorted(got) == sorted(want), (
        f"only in /metrics: {sorted(set(got) - set(want))}; "
        f"only in the README: {sorted(set(want) - set(got))}"
    )
    for name, (kind, labels) in got.items():
        assert kind == want[name][0], name
        if labels:  # labels show on series that have samples; those must match
            assert labels == want[name][1], name
    assert got["ringbridge_batches_rejected_total"][1] == {"reason"}
    assert got["ringbridge_kernel_kind_samples_total"][1] == {"kind"}
    assert "ringbridge_commit_latency_seconds_created" not in text
    if drain == "nats":
        assert got["ringbridge_nats_messages_total"][1] == {"result"}
        assert got["ringbridge_nats_invalid_messages_total"][1] == {"code"}
        assert got["ringbridge_nats_consumer_pending_messages"][1] == {"stream", "consumer"}
        assert 'ringbridge_nats_messages_total{result="invalid"} 1.0' in text
