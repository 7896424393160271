"""The built-in consumer (``bpf/ringbridge.bpf.c``): its counters, timer and kick.

Loaded and pinned by :mod:`ringbridge.kernel.bpfobj`. Its drain modes:

- ``timer``: the in-kernel timer is armed at start; after each event-loop
  pass that committed, the producer re-arms it if it backed off (its next
  drain a period after its last) (:class:`~ringbridge.producer.kick.TimerWaker`);
  at shutdown the kernel gets the grace period to consume what was committed,
  then the timer is disarmed (a pinned timer would otherwise tick on forever);
- ``kick``: the per-call budget is set and the on-demand drain program runs
  after each commit on the native worker;
- ``external``: the user's own program drains; a timer a previous run left
  armed is disarmed so that ours does not compete.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import ConfigError
from ..kernel import libbpf as lb
from ..kernel.bpfobj import LoadedRingbridge, load_default
from ..kernel.counters import KernelCounters
from ..kernel.pins import BUILTIN_MAPS
from ..producer.contract import SeqStore
from ..producer.kick import DrainTrigger, TimerWaker
from ..ring import UserRingBuffer
from ..schema import DEFAULT_SAMPLE_TYPE, SampleCodec, TypeSources
from ..settings import DrainMode, Settings
from .base import PinDirBackend, kick_trigger, open_type_sources, typed_codec

__all__ = ["BuiltinBackend", "KernelCountersCollector"]

log = logging.getLogger("ringbridge.backends")


class BuiltinBackend(PinDirBackend[LoadedRingbridge]):
    """The built-in consumer, loaded (or re-opened from its pins)."""

    kind = "builtin"

    def __init__(self, settings: Settings, obj_path: Path, drain: DrainMode) -> None:
        self.obj_path = obj_path
        loaded = load_default(obj_path, settings.pin_dir, settings.ring_size)
        super().__init__(settings, loaded, drain, reused=loaded.reused)

    @property
    def waiting_flag_fd(self) -> int | None:
        return self.loaded.ctl_fd

    @property
    def seq_store(self) -> SeqStore | None:
        # The next seq lives in the pinned ctl map.
        return self.loaded

    def open_types(self) -> TypeSources:
        obj = lb.BpfObject.open(self.obj_path)
        try:
            btf = obj.btf()
        except BaseException:
            obj.close()
            raise
        return open_type_sources(self.settings, (str(self.obj_path), btf), owned=[obj])

    def sample_codec(self, types: TypeSources) -> SampleCodec:
        return typed_codec(types, self.settings.sample_type or DEFAULT_SAMPLE_TYPE)

    def exporters(self) -> list[Collector]:
        return [KernelCountersCollector(self.loaded)]

    def kernel_stats(self) -> dict[str, Any]:
        kc = self.loaded.read_counters()
        return {
            "samples": kc.samples,
            "bytes": kc.bytes,
            "drain_calls": kc.drain_calls,
            "drain_errors": kc.drain_errors,
            "short_samples": kc.short_samples,
            "kind_overflow": kc.kind_overflow,
            "kinds": {str(k): {"samples": c, "value": v} for k, c, v in kc.kinds()},
        }

    def prepare_drain(self) -> None:
        s = self.settings
        if self.drain == "timer":
            self.loaded.arm_timer(s.drain_period_ns, s.drain_budget, s.drain_idle_period_ns)
        elif self.drain == "kick":
            self.loaded.set_budget(s.drain_budget)
            self.loaded.disarm_timer()
        else:
            # "external": the user's own program drains; ours must not compete
            # (a pinned timer survives restarts, so a previous timer-mode run
            # could still be draining).
            self.loaded.disarm_timer()

    def start_drain(self, ring: UserRingBuffer, stack: AsyncExitStack) -> DrainTrigger | None:
        if self.drain == "kick":
            return kick_trigger(self.loaded.drain_prog_fd, ring, stack)
        if self.drain != "timer":
            return None
        loaded, grace = self.loaded, self.settings.shutdown_grace

        async def quiesce_timer() -> None:
            # Let the kernel consume what we committed, then stop the timer.
            drained = True
            try:
                await ring.wait_consumed_async(ring.producer_pos, grace)
            except Exception:
                drained = False
            loaded.disarm_timer()
            if not drained:
                log.warning(
                    "ring not fully consumed at shutdown; it stays pinned",
                    extra={"pending_bytes": ring.producer_pos - ring.consumer_pos()},
                )

        stack.push_async_callback(quiesce_timer)
        return TimerWaker(loaded.timer_idle_drains, loaded.wake_timer)

    def map_fd(self, name: str) -> lb.Fd:
        if name not in BUILTIN_MAPS:
            raise ConfigError(
                f"the built-in consumer has no map {name!r} (maps: {', '.join(BUILTIN_MAPS)})"
            )
        return lb.obj_get(self.loaded.pins.dir / name)

    def describe(self) -> dict[str, str]:
        return {"backend": self.kind, "object": str(self.obj_path)}


class KernelCountersCollector(Collector):
    """The built-in consumer's per-CPU counters, summed and read at scrape time."""

    def __init__(self, loaded: LoadedRingbridge) -> None:
        self._loaded = loaded

    def collect(self) -> Iterator[Metric]:
        kc: KernelCounters = self._loaded.read_counters()
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
        for kind, c, v in kc.kinds():
            label = [str(kind)]
            count.add_metric(label, c)
            value.add_metric(label, v)
            high.add_metric(label, v >> 32)
            low.add_metric(label, v & 0xFFFFFFFF)
        yield count
        yield value
        yield high
        yield low
