"""The series alert rules and dashboards are built on, beyond the service's counters.

- ``ringbridge_ready`` / ``ringbridge_producer_up`` /
  ``ringbridge_consumer_stalled_seconds`` / ``ringbridge_ring_fault{cause}``:
  the verdicts of ``/readyz`` and ``/healthz`` (:mod:`ringbridge.api.health`)
  as gauges;
- ``ringbridge_batch_samples``, ``ringbridge_batch_bytes``,
  ``ringbridge_ack_latency_seconds``: the per-batch distributions of
  :class:`~ringbridge.producer.observe.BatchObserver`, as histograms;
- ``ringbridge_build_info{version}`` and the standard ``process_*`` series
  (start time, CPU, memory, fds), which tell a restart from a counter reset.

The deploy kit (``deploy/prometheus``, ``deploy/grafana``) uses nothing else;
a test checks each name it uses against a live ``/metrics``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric

from .. import __version__
from ..errors import ForeignWriterError
from ..producer.observe import BatchObserver
from ..runtime import Runtime
from . import health

#: name -> (help, label names), for the series of BatchObserver.series().
_HISTOGRAMS: dict[str, tuple[str, tuple[str, ...]]] = {
    "batch_samples": (
        "Samples per committed batch, by transport and encoding.",
        ("transport", "encoding"),
    ),
    "batch_bytes": (
        "Ring bytes (headers and padding included) per committed batch, by transport and encoding.",
        ("transport", "encoding"),
    ),
    "ack_latency_seconds": (
        "Time from a batch's arrival to its ack, by transport and the ack's state "
        "(committed; consumed for wait=consumed).",
        ("transport", "state"),
    ),
}


def register(registry: CollectorRegistry) -> None:
    """The series that exist whether or not the service runs: process and build."""
    ProcessCollector(registry=registry)
    registry.register(_BuildInfo())


class _BuildInfo:
    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "ringbridge_build_info",
            "The running ringbridge's version (always 1).",
            labels=["version"],
        )
        info.add_metric([__version__], 1)
        yield info


def collect(rt: Runtime) -> Iterator[Metric]:
    """Health gauges and batch histograms of a running service."""
    ready, checks = health.readiness(rt)
    yield GaugeMetricFamily(
        "ringbridge_ready", "1 while /readyz answers 200, else 0.", value=1 if ready else 0
    )
    yield GaugeMetricFamily(
        "ringbridge_producer_up",
        "1 while the producer task runs and takes batches; 0 once it died or stops.",
        value=1 if checks["producer_running"] else 0,
    )
    fault = GaugeMetricFamily(
        "ringbridge_ring_fault",
        "1 once the service stopped committing to its ring, by cause: foreign_writer "
        "(another writer moved producer_pos or wrote a record it did not); 0 otherwise. "
        "Only a restart clears it.",
        labels=["cause"],
    )
    # The rule /healthz and /readyz answer by (single_producer); the cause is the
    # error code batches are then refused with, exported at 0 too so that rules
    # and dashboards find the series before anything went wrong.
    fault.add_metric([ForeignWriterError.code], 0 if checks["single_producer"] else 1)
    yield fault
    if "consumer_stalled_seconds" in checks:
        yield GaugeMetricFamily(
            "ringbridge_consumer_stalled_seconds",
            "How long bytes have been pending without the kernel's consumer_pos moving "
            "(0 while it moves or the ring is empty).",
            value=checks["consumer_stalled_seconds"],
        )
    yield from histogram_families(rt.batches)


def histogram_families(obs: BatchObserver) -> Iterator[Metric]:
    families: dict[str, HistogramMetricFamily] = {}
    for name, labels, buckets in obs.series():
        doc, label_names = _HISTOGRAMS[name]
        fam = families.get(name)
        if fam is None:
            fam = families[name] = HistogramMetricFamily(
                f"ringbridge_{name}", doc, labels=list(label_names)
            )
        fam.add_metric(
            [labels[k] for k in label_names], buckets=buckets.cumulative(), sum_value=buckets.sum
        )
    yield from families.values()
