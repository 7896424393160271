"""The service's own ack latency over one run, read from its histogram.

A latency row's client sees the service's arrival-to-ack time plus what the
host adds: the request's wake-up of the server and the ack's wake-up of the
client, each across CPUs when they run on two (the floor row measures those
with a C responder). ``ringbridge_ack_latency_seconds`` counts from a
batch's arrival (the server holding its first bytes) to its ack, so its
buckets, read before and after the run, bound the service's share: the
smallest bucket bound that holds a quantile of the run's acks.
"""

from __future__ import annotations

import math
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

HISTOGRAM = "ringbridge_ack_latency_seconds"

Buckets = dict[float, float]  # upper bound (s) -> acks at or under it, cumulative


def read(addr: str, transport: str, state: str) -> Buckets:
    """The histogram's buckets for ``transport`` (http / ws) and ``state`` now."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=10) as r:
        text = r.read().decode()
    out: Buckets = {}
    for family in text_string_to_metric_families(text):
        if family.name != HISTOGRAM:
            continue
        for s in family.samples:
            labels = s.labels
            if (
                s.name == f"{HISTOGRAM}_bucket"
                and labels.get("transport") == transport
                and labels.get("state") == state
            ):
                out[float(labels["le"])] = float(s.value)
    return out


def quantile_bound(before: Buckets, after: Buckets, q: float) -> float | None:
    """The smallest bucket bound (s) at or under which ``q`` of the acks counted
    between ``before`` and ``after`` fell; None when none was counted, inf when
    only the open bucket holds them."""
    total = after.get(math.inf, 0.0) - before.get(math.inf, 0.0)
    if total <= 0:
        return None
    for le in sorted(after):
        if after[le] - before.get(le, 0.0) >= q * total:
            return le
    return math.inf
