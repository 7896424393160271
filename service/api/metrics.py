"""``GET /metrics`` (Prometheus text) and the snapshot behind ``GET /v1/stats``.

Each app has its own :class:`CollectorRegistry` (no process-global state: two
apps in one process, e.g. in tests, do not share or collide). Counters that
live elsewhere -- the producer's, the ring's, and the backend's (the built-in
consumer's per-CPU counters, a user object's exported maps and globals) --
are read at scrape time by collectors rather than mirrored into
prometheus-client objects, so a scrape always shows the kernel's current
numbers. The backend brings its own collectors (``Backend.exporters``); only
the commit latency histogram is a live prometheus-client object. The series
of :mod:`ringbridge.api.opsmetrics` (health gauges, batch histograms, process
and build) and, with ``--nats``, :mod:`ringbridge.api.fleetmetrics` are in the
same registry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..backends.exported import exact_samples
from ..producer.observe import LATENCY_BUCKETS, Buckets
from ..runtime import Runtime
from ..wire import Ack
from . import fleetmetrics, opsmetrics
from .auth import require_token_if_protected

# No ``*_created`` series: a gauge of the histogram's creation time per
# scrape that dashboards do not use (prometheus-client's own opt-out).
disable_created_metrics()  # type: ignore[no-untyped-call]


class RingbridgeCollector(Collector):
    """Service, ring and kernel counters, read when scraped."""

    def __init__(self, runtime: Callable[[], Runtime | None]) -> None:
        self._runtime = runtime

    def collect(self) -> Iterator[Metric]:
        rt = self._runtime()
        if rt is None:
            return
        p = rt.producer.statistics()
        ring = rt.ring.statistics()

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"ringbridge_{name}", doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"ringbridge_{name}", doc, value=value)

        yield counter("samples_committed", "Samples committed to the ring.", p.samples_committed)
        yield counter("bytes_committed", "Payload bytes committed to the ring.", p.bytes_committed)
        yield counter("batches_committed", "Batches committed to the ring.", p.batches_committed)
        rejected = CounterMetricFamily(
            "ringbridge_batches_rejected",
            "Batches refused, nothing of them committed, by reason.",
            labels=["reason"],
        )
        for reason, n in sorted(rt.rejections.by_reason.items()):
            rejected.add_metric([reason], n)
        yield rejected
        yield counter(
            "ring_full_waits",
            "Batches that found the ring full and waited for space.",
            p.ring_full_waits,
        )
        yield gauge("ring_free_bytes", "Free bytes in the ring now.", ring.free_bytes)
        yield gauge("ring_size_bytes", "Data size of the ring.", ring.size)
        yield gauge(
            "ring_pending_bytes",
            "Committed bytes the kernel has not consumed yet.",
            ring.producer_pos - ring.consumer_pos,
        )
        yield gauge("queue_batches", "Batches admitted and waiting to commit.", p.queued_batches)
        adm = p.admission
        yield gauge(
            "admission_budget_bytes",
            "Admission budget: bytes that bodies, frames and waiting batches may hold.",
            adm.budget_bytes,
        )
        yield gauge(
            "admission_bytes_in_use",
            "Admission credit held now by bodies, frame buffers and waiting batches.",
            adm.in_use_bytes,
        )
        yield counter(
            "admission_refused",
            "Requests, frames and connections refused for want of admission credit.",
            adm.refused,
        )
        if p.kick is not None:
            yield counter("drain_kicks", "On-demand drain program runs.", p.kick.kicks)
            yield counter("drain_kick_errors", "On-demand drain runs that failed.", p.kick.errors)
        yield from opsmetrics.collect(rt)
        if rt.fleet is not None:
            yield from fleetmetrics.collect(rt.fleet.statistics())
        yield from _event_metrics(rt)
        for export in rt.exports:
            yield from export.collect()


def _event_metrics(rt: Runtime) -> Iterator[Metric]:
    """Per event map (``--event-map``, ``--event-pin``); the families are there, empty,
    without event maps, so that dashboards and alert rules find them."""
    events = CounterMetricFamily(
        "ringbridge_events", "Events read out of a kernel ring buffer, by map.", labels=["map"]
    )
    nbytes = CounterMetricFamily(
        "ringbridge_events_bytes", "Bytes of those events, by map.", labels=["map"]
    )
    lost = CounterMetricFamily(
        "ringbridge_events_lost",
        "Events a subscriber did not get: slow_subscriber (its buffer was full; counted "
        "per subscriber) or no_subscriber (nobody subscribed), by map.",
        labels=["map", "reason"],
    )
    subscribers = GaugeMetricFamily(
        "ringbridge_events_subscribers", "Subscribers of an event map now.", labels=["map"]
    )
    decode_errors = CounterMetricFamily(
        "ringbridge_events_decode_errors",
        "Events shorter than their map's type, sent with their bytes instead, by map.",
        labels=["map"],
    )
    for st in rt.events.statistics():
        events.add_metric([st.name], st.events)
        nbytes.add_metric([st.name], st.bytes)
        for reason, n in st.lost.items():
            lost.add_metric([st.name, reason], n)
        subscribers.add_metric([st.name], st.subscribers)
        decode_errors.add_metric([st.name], st.decode_errors)
    yield from (events, nbytes, lost, subscribers, decode_errors)


class _CommitLatency(Collector):
    """``ringbridge_commit_latency_seconds`` from plain bucket counts.

    Observed once per committed batch on the event loop: a bisect and two
    increments, not prometheus-client's locked ``Histogram.observe`` (two
    lock round trips a batch, measurable on the WebSocket path).
    """

    def __init__(self) -> None:
        self.buckets = Buckets(LATENCY_BUCKETS)

    def collect(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(
            "ringbridge_commit_latency_seconds",
            "Time from enqueue to commit of a batch.",
            buckets=self.buckets.cumulative(),
            sum_value=self.buckets.sum,
        )


class ServiceMetrics:
    """The per-app registry: the collector above plus the commit latency histogram."""

    def __init__(self, runtime: Callable[[], Runtime | None]) -> None:
        self.registry = CollectorRegistry()
        self.commit_latency = _CommitLatency()
        self.registry.register(self.commit_latency)
        self.registry.register(RingbridgeCollector(runtime))
        opsmetrics.register(self.registry)

    def observe_commit(self, latency: float, ack: Ack) -> None:
        self.commit_latency.buckets.observe(latency)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def stats_snapshot(rt: Runtime) -> dict[str, Any]:
    """The same numbers as /metrics, as one JSON document (``GET /v1/stats``)."""
    p = rt.producer.statistics()
    ring = rt.ring.statistics()
    producer = asdict(p)
    fleet: dict[str, Any] | None = None
    if rt.fleet is not None:
        st = rt.fleet.statistics()
        fleet = {**asdict(st), "messages": st.messages}
    return {
        "producer": producer,
        "rejected": dict(rt.rejections.by_reason),
        "ring": asdict(ring),
        "kernel": rt.backend.kernel_stats(),
        "exported": exact_samples(rt.exports),
        "fleet": fleet,
        "events": event_stats(rt),
        "config": {
            "drain": rt.backend.drain,
            "ring_size": rt.settings.ring_size,
            "max_batch_bytes": rt.settings.max_batch_bytes,
            "max_sample_bytes": rt.settings.max_sample_bytes,
            "pin_dir": str(rt.settings.pin_dir),
            "pins_reused": rt.backend.reused,
        },
    }


def event_stats(rt: Runtime) -> dict[str, Any]:
    """Per event map: its counters and its reader's positions."""
    readers = {r.name: r for r in (rt.feeds.statistics() if rt.feeds is not None else [])}
    out: dict[str, Any] = {}
    for st in rt.events.statistics():
        entry = asdict(st)
        del entry["name"]
        reader = readers.get(st.name)
        if reader is not None:
            entry["reader"] = {k: v for k, v in asdict(reader).items() if k != "name"}
        out[st.name] = entry
    return out


router = APIRouter()


@router.get(
    "/metrics",
    summary="Prometheus metrics (service, ring and kernel counters)",
    dependencies=[Depends(require_token_if_protected)],
    responses={200: {"content": {"text/plain": {}}}},
)
async def metrics(request: Request) -> Response:
    m: ServiceMetrics = request.app.state.metrics
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)
