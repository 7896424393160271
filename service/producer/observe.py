"""Per-batch distributions: how big batches are and how long their acks take, by path.

The service's counters say how much went through; these say what it looked
like: samples and ring bytes per committed batch, and the time from a batch's
arrival to its ack, by transport (``http``, ``ws``) and encoding (``json``,
``binary``) -- the bounded label sets an operator slices throughput and
latency by. :mod:`ringbridge.api.histograms` exports them as Prometheus
histograms at scrape time.

Observed once per successful ack, where the ack is rendered: the HTTP ingest
handler and the WebSocket writer call :meth:`BatchObserver.acked`, and the
fleet front door once a JetStream message is committed (its arrival: when it
was taken up, in stream order). Latency
runs from arrival (HTTP: before admission, so reading and decoding the body
count; WS: the frame read off the socket) to the ack, labelled with the ack's
``state``: ``committed`` (in the ring) or ``consumed`` (the kernel's
consumer passed it; only batches whose client asked ``wait=consumed`` know
this, and waiting for it costs nothing extra then). A ``wait=consumed`` ack
that ran out of time (202, ``committed``) counts in the sizes but not in the
latency: its time is the client's timeout, not the service's.

Hand-rolled buckets rather than prometheus-client objects: this runs on the
event loop for every batch (tens of thousands a second), and a bisect and two
increments cost a fraction of a ``Histogram.labels().observe()``.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal

from ..wire import Ack, WaitFor

Transport = Literal["http", "ws", "nats"]
Encoding = Literal["json", "binary"]

TRANSPORTS: Final[tuple[Transport, ...]] = ("http", "ws", "nats")
ENCODINGS: Final[tuple[Encoding, ...]] = ("json", "binary")
STATES: Final[tuple[WaitFor, ...]] = ("committed", "consumed")

#: Seconds. An ack spans tens of microseconds (room in the ring) to the
#: client's timeout (ring full), hence the wide, log-spaced buckets.
LATENCY_BUCKETS: Final = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
#: Samples per batch: one sample to the most a 4 MiB batch of 8-byte records holds.
SAMPLES_BUCKETS: Final = tuple(float(4**i) for i in range(10))  # 1 .. 262144
#: Ring bytes per batch (headers and padding included): one record to 16 MiB.
BYTES_BUCKETS: Final = tuple(float(64 * 4**i) for i in range(10))  # 64 B .. 16 MiB


class Buckets:
    """One histogram series: cumulative-on-read bucket counts, sum and count."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count of values <= le), ..., ("+Inf", count)]``."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


@dataclass(slots=True)  # one per batch: not frozen, as wsframes.Head (never changed)
class Arrival:
    """When and how a batch came in: what :meth:`BatchObserver.acked` labels it by.

    ``at`` is ``time.perf_counter()``, not ``loop.time()``: uvloop's loop clock
    is libuv's, in whole milliseconds and cached per loop pass, too coarse for
    buckets of tens of microseconds.
    """

    at: float
    encoding: Encoding

    @classmethod
    def now(cls, encoding: Encoding) -> Arrival:
        return cls(time.perf_counter(), encoding)


class BatchObserver:
    """The distributions of one running service; every label combination exists from start.

    Series that exist before the first batch let ``rate()`` start from zero
    and let dashboards and alert rules be checked against a fresh service.
    """

    def __init__(self) -> None:
        self.samples = {(t, e): Buckets(SAMPLES_BUCKETS) for t in TRANSPORTS for e in ENCODINGS}
        self.bytes = {(t, e): Buckets(BYTES_BUCKETS) for t in TRANSPORTS for e in ENCODINGS}
        self.latency = {(t, s): Buckets(LATENCY_BUCKETS) for t in TRANSPORTS for s in STATES}

    def acked(
        self,
        transport: Transport,
        arrival: Arrival,
        ack: Ack,
        wait: WaitFor,
        now: float | None = None,
    ) -> None:
        """A batch that arrived at ``arrival`` got ``ack`` now (or at ``now``, perf_counter)."""
        if now is None:
            now = time.perf_counter()
        key = (transport, arrival.encoding)
        self.samples[key].observe(ack.accepted)
        self.bytes[key].observe(ack.ring_end_pos - ack.ring_start_pos)
        if ack.state == wait:
            self.latency[(transport, ack.state)].observe(now - arrival.at)

    def series(self) -> Iterator[tuple[str, dict[str, str], Buckets]]:
        """``(histogram, labels, buckets)`` for every series, histogram by histogram."""
        for (t, e), b in self.samples.items():
            yield "batch_samples", {"transport": t, "encoding": e}, b
        for (t, e), b in self.bytes.items():
            yield "batch_bytes", {"transport": t, "encoding": e}, b
        for (t, s), b in self.latency.items():
            yield "ack_latency_seconds", {"transport": t, "state": s}, b
