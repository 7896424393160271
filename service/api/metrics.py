"""``GET /metrics`` (Prometheus text) and the snapshot behind ``GET /v1/stats``.

Each app has its own :class:`CollectorRegistry` (no process-global state: two
apps in one process, e.g. in tests, do not share or collide). Counters that
live elsewhere -- the producer's, the ring's, and the BPF program's per-CPU
counters -- are read at scrape time by a custom collector rather than
mirrored into prometheus-client objects, so a scrape always shows the kernel's
current numbers (summed over CPUs by ``LoadedRingbridge.read_counters``).
Only the commit latency histogram is a live prometheus-client object.
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
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..kernel.bpfobj import KernelCounters, LoadedRingbridge
from ..kernel.pinnedring import PinnedRing
from ..producer.task import Ack
from .auth import require_token_if_protected
from .exported import exact_samples
from .state import Runtime

# No ``*_created`` series: a gauge of the histogram's creation time per
# scrape that dashboards do not use (prometheus-client's own opt-out).
disable_created_metrics()  # type: ignore[no-untyped-call]

# Commit latency spans from tens of microseconds (ring has room) to the
# submit timeout (ring full), hence the wide, log-spaced buckets.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


def _kinds(kc: KernelCounters) -> Iterator[tuple[int, int, int]]:
    # Only kinds that were seen: 256 mostly-zero series per scrape would be noise.
    for kind, (count, value) in enumerate(zip(kc.kind_count, kc.kind_value, strict=True)):
        if count or value:
            yield kind, count, value


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
        yield from self._kernel(rt)
        for export in rt.exports:
            yield from export.collect()

    def _kernel(self, rt: Runtime) -> Iterator[Metric]:
        # A user's object has no counters of ours (its maps are exported
        # with --export-map instead).
        if not isinstance(rt.loaded, LoadedRingbridge):
            return
        kc = rt.loaded.read_counters()
        yield CounterMetricFamily(
            "ringbridge_kernel_samples", "Samples the BPF consumer processed.", value=kc.samples
        )
        yield CounterMetricFamily(
            "ringbridge_kernel_bytes", "Payload bytes the BPF consumer processed.", value=kc.bytes
        )
        yield CounterMetricFamily(
            "ringbridge_kernel_drains", "bpf_user_ringbuf_drain() calls.", value=kc.drain_calls
        )
        errors = CounterMetricFamily(
            "ringbridge_kernel_drain_errors",
            "Failed drain calls, by cause (errno name).",
            labels=["cause"],
        )
        for cause, n in kc.drain_errors.items():
            errors.add_metric([cause], n)
        yield errors
        yield CounterMetricFamily(
            "ringbridge_kernel_short_samples",
            "Samples shorter than the sample struct.",
            value=kc.short_samples,
        )
        yield CounterMetricFamily(
            "ringbridge_kernel_kind_overflow",
            "Samples whose kind is beyond the per-kind counters.",
            value=kc.kind_overflow,
        )
        count = CounterMetricFamily(
            "ringbridge_kernel_kind_samples", "Samples by kind.", labels=["kind"]
        )
        value = CounterMetricFamily(
            "ringbridge_kernel_kind_value",
            "Sum of `value` by kind (carried past 2**64, never wraps); a float, exact up "
            "to 2**53: see ringbridge_kernel_kind_value_high/_low for the exact sum.",
            labels=["kind"],
        )
        # Prometheus values are float64: a sum above 2**53 loses its low bits.
        # sum = high * 2**32 + low with both exact (high up to 2**53: sums below 2**85).
        high = GaugeMetricFamily(
            "ringbridge_kernel_kind_value_high",
            "The per-kind `value` sum divided by 2**32, rounded down (exact below 2**85).",
            labels=["kind"],
        )
        low = GaugeMetricFamily(
            "ringbridge_kernel_kind_value_low",
            "Lower 32 bits of the per-kind `value` sum (exact).",
            labels=["kind"],
        )
        for kind, c, v in _kinds(kc):
            label = [str(kind)]
            count.add_metric(label, c)
            value.add_metric(label, v)
            high.add_metric(label, v >> 32)
            low.add_metric(label, v & 0xFFFFFFFF)
        yield count
        yield value
        yield high
        yield low


class ServiceMetrics:
    """The per-app registry: the collector above plus the commit latency histogram."""

    def __init__(self, runtime: Callable[[], Runtime | None]) -> None:
        self.registry = CollectorRegistry()
        self.commit_latency = Histogram(
            "ringbridge_commit_latency_seconds",
            "Time from enqueue to commit of a batch.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(RingbridgeCollector(runtime))

    def observe_commit(self, latency: float, ack: Ack) -> None:
        self.commit_latency.observe(latency)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def stats_snapshot(rt: Runtime) -> dict[str, Any]:
    """The same numbers as /metrics, as one JSON document (``GET /v1/stats``)."""
    p = rt.producer.statistics()
    ring = rt.ring.statistics()
    producer = asdict(p)
    kernel: dict[str, Any] | None = None
    if isinstance(rt.loaded, LoadedRingbridge):
        kc = rt.loaded.read_counters()
        kernel = {
            "samples": kc.samples,
            "bytes": kc.bytes,
            "drain_calls": kc.drain_calls,
            "drain_errors": kc.drain_errors,
            "short_samples": kc.short_samples,
            "kind_overflow": kc.kind_overflow,
            "kinds": {str(k): {"samples": c, "value": v} for k, c, v in _kinds(kc)},
        }
    elif isinstance(rt.loaded, PinnedRing):
        kernel = {"ring_pin": str(rt.loaded.path), "map_id": rt.loaded.info.id}
    else:
        kernel = {
            "object": str(rt.loaded.plan.path),
            "ring_map": rt.loaded.plan.ring_map,
            "attached": rt.loaded.attached,
            "drain_program": rt.loaded.plan.drain_program,
        }
    return {
        "producer": producer,
        "rejected": dict(rt.rejections.by_reason),
        "ring": asdict(ring),
        "kernel": kernel,
        "exported": exact_samples(rt.exports),
        "config": {
            "drain": rt.drain,
            "ring_size": rt.settings.ring_size,
            "max_batch_bytes": rt.settings.max_batch_bytes,
            "max_sample_bytes": rt.settings.max_sample_bytes,
            "pin_dir": str(rt.settings.pin_dir),
            "pins_reused": rt.loaded.reused,
        },
    }


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
