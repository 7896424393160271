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
from ..kernel import libbpf as lb
from ..kernel.objplan import plan_object
from ..kernel.userobj import LoadedObject, load_object
from ..producer.contract import SeqStore
from ..producer.kick import DrainTrigger
from ..producer.ticker import DrainTicker
from ..ring import UserRingBuffer
from ..schema import SampleCodec
from ..settings import DrainMode, Settings
from .base import PinDirBackend, kick_trigger
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
        )
        loaded = load_object(plan, settings.pin_dir, attach=settings.attach)
        super().__init__(settings, loaded, drain, reused=loaded.reused)

    @property
    def waiting_flag_fd(self) -> int | None:
        return None

    @property
    def seq_store(self) -> SeqStore | None:
        return self.loaded.meta

    def sample_codec(self) -> SampleCodec:
        """Without ``--sample-type``: binary batches and ``{"data": ...}`` samples only."""
        sample_type = self.settings.sample_type
        if sample_type is None:
            return SampleCodec.raw_only()
        try:
            return SampleCodec.from_object(self.loaded.plan.path, sample_type)
        except RingbridgeError as exc:
            raise ConfigError(f"--sample-type {sample_type}: {exc.message}") from exc

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
