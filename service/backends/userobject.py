"""A user's BPF object (``--bpf-object``): planned, loaded, pinned and attached.

Planned by :mod:`ringbridge.kernel.objplan`, loaded by
:mod:`ringbridge.kernel.userobj`. The next sample seq lives in the pin set's
identity record. Its drain modes need ``--drain-program`` (a
``SEC("syscall")`` program of the object) for ``kick`` (run after each
commit on the native worker) and ``timer`` (run on a period by a
:class:`~ringbridge.producer.ticker.DrainTicker`: the object has no timer of
ours); ``external`` leaves the drain to the object's own programs.
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from prometheus_client.registry import Collector

from ..errors import ConfigError, RingbridgeError
from ..events.feeds import check_event_maps
from ..kernel import libbpf as lb
from ..kernel.objplan import plan_object
from ..kernel.userobj import LoadedObject, load_object
from ..producer.contract import SeqStore
from ..producer.kick import DrainTrigger
from ..producer.ticker import DrainTicker
from ..ring import UserRingBuffer
from ..schema import SampleCodec, TypeSources, declared_value, model
from ..settings import DrainMode, Settings
from .base import PinDirBackend, kick_trigger, open_type_sources, typed_codec
from .exported import build_exporters

__all__ = ["ObjectBackend"]


class ObjectBackend(PinDirBackend[LoadedObject]):
    """A user's object, loaded with its maps pinned under ``--pin-dir``."""

    kind = "object"

    def __init__(self, settings: Settings, obj_path: Path, drain: DrainMode) -> None:
        plan = plan_object(
            obj_path,
            ring_size=settings.ring_size,
            ring_map=settings.ring_map,
            map_sizes=settings.map_size,
            drain_program=settings.drain_program,
            set_globals=settings.set_global,
        )
        # Before the load: a wrong --event-map fails without pinning anything.
        check_event_maps(plan, settings.event_specs)
        loaded = load_object(plan, settings.pin_dir, attach=settings.attach)
        super().__init__(settings, loaded, drain, reused=loaded.reused)

    @property
    def waiting_flag_fd(self) -> int | None:
        return None

    @property
    def seq_store(self) -> SeqStore | None:
        return self.loaded.meta

    def open_types(self) -> TypeSources:
        """The object's own BTF first (it holds a type the program uses from a global,
        a map or a function signature; an inlined callback's is only in the header)."""
        plan = self.loaded.plan
        return open_type_sources(self.settings, (str(plan.path), self.loaded.btf()))

    def sample_codec(self, types: TypeSources) -> SampleCodec:
        """Without ``--sample-type``: binary batches and ``{"data": ...}`` samples only.

        The type is checked against the value the ring map declares, if it declares
        one (``__type(value, T)`` or ``__uint(value_size, N)``); the size the program
        passes to ``bpf_dynptr_data`` leaves no trace in the object to check.
        """
        sample_type = self.settings.sample_type
        if sample_type is None:
            return SampleCodec.raw_only()
        ring = self.loaded.plan.ring_map
        return typed_codec(types, sample_type, ring_map=ring, declared=self.declared_value(ring))

    def declared_value(self, map_name: str) -> tuple[int, model.Type | None]:
        return declared_value(self.loaded.plan.path, map_name)

    def exporters(self) -> list[Collector]:
        """``--export-map`` maps and (``--export-globals``) the object's globals."""
        s = self.settings
        return list(build_exporters(self.loaded, s.export_map, globals_=s.export_globals))

    def kernel_stats(self) -> dict[str, Any]:
        plan = self.loaded.plan
        return {
            "object": str(plan.path),
            "ring_map": plan.ring_map,
            "attached": self.loaded.attached,
            "drain_program": plan.drain_program,
        }

    def prepare_drain(self) -> None:
        """Nothing to set up in the kernel: the object has no drain settings of ours."""

    def start_drain(self, ring: UserRingBuffer, stack: AsyncExitStack) -> DrainTrigger | None:
        if self.drain == "kick":
            return kick_trigger(self.loaded.drain_prog_fd, ring, stack)
        if self.drain != "timer":
            return None
        ticker = DrainTicker(
            self.loaded.drain,
            lambda: ring.producer_pos - ring.consumer_pos(),
            self.settings.drain_period_ns / 1e9,
            grace=self.settings.shutdown_grace,
        )
        ticker.start()
        return ticker

    def map_fd(self, name: str) -> lb.Fd:
        try:
            m = self.loaded.map(name)
        except RingbridgeError as exc:
            maps = ", ".join(s.name for s in self.loaded.plan.maps)
            raise ConfigError(
                f"BPF object {self.loaded.plan.path} has no map {name!r} (maps: {maps})"
            ) from exc
        return lb.Fd(os.dup(m.fd), name)

    def describe(self) -> dict[str, str]:
        return {"backend": self.kind, "object": str(self.loaded.plan.path)}
