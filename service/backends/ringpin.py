"""A user ring another loader pinned (``--ring-pin``): nothing of ours loaded or pinned.

Opened by :mod:`ringbridge.kernel.pinnedring`; its producer lock is the
ring's own, taken when the library maps it. The other loader drains
(``external``), its programs' BTF gives the sample type, and the ring's size
is the pin's. There is no place of ours to keep the next seq, so seqs start
at 0 at every start.

ringbridge's own state records (the fleet cursor) go to ``--pin-dir``, which
nothing else uses with ``--ring-pin``; like every cursor, it has one writer
(its map's lock, :func:`ringbridge.assemble.open_fleet_cursor`).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from prometheus_client.registry import Collector

from ..errors import ConfigError, PinError
from ..kernel import libbpf as lb
from ..kernel.pinnedring import PinnedRing, open_ring_pin
from ..kernel.pins import STATE_PINS, check_pin_dir
from ..producer.contract import SeqStore
from ..producer.kick import DrainTrigger
from ..ring import UserRingBuffer
from ..schema import SampleCodec, TypeSources
from ..settings import DrainMode, Settings
from .base import LoadedBackend, open_type_sources, state_pin_under, typed_codec

__all__ = ["RingPinBackend"]


class RingPinBackend(LoadedBackend[PinnedRing]):
    """The ring pinned at ``--ring-pin``, opened for our producer."""

    kind = "ring_pin"
    drain: DrainMode = "external"  # the loader that pinned it drains
    reused = True  # someone else's pins: never ours to forget
    waiting_flag_fd: int | None = None
    seq_store: SeqStore | None = None

    def __init__(self, settings: Settings, ring_pin: Path) -> None:
        size_given = "ring_size" in settings.model_fields_set
        super().__init__(
            settings, open_ring_pin(ring_pin, settings.ring_size, size_given=size_given)
        )

    @property
    def ring_name(self) -> str:
        return str(self.loaded.path)

    def recovery_hint(self) -> str:
        return (
            "stop the other writer (a second ringbridge, or another program writing "
            "this ring), then restart ringbridge; if the ring's consumer keeps failing "
            "to drain it (the ring is poisoned), its loader must recreate the ring pinned "
            f"at {self.loaded.path}"
        )

    def forget_pins(self) -> None:
        """Nothing: the pins are the other loader's."""

    def state_pin(self, name: str) -> Path:
        pin_dir = self.settings.pin_dir
        check_pin_dir(pin_dir)
        try:
            pin_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise PinError(f"cannot create pin dir {pin_dir}: {exc}") from exc
        others = sorted({p.name for p in pin_dir.iterdir()} - STATE_PINS)
        if others:
            raise PinError(
                f"--pin-dir {pin_dir} holds pins ({', '.join(others[:5])}): with "
                "--ring-pin it keeps only ringbridge's own state (the fleet cursor); "
                "choose an empty --pin-dir for this ring"
            )
        return state_pin_under(pin_dir, name)

    def open_types(self) -> TypeSources:
        """The kernel's BTF for the ring's loader first (see
        :meth:`~ringbridge.kernel.pinnedring.PinnedRing.btf`), when there is one."""
        s = self.settings
        try:
            btf = self.loaded.btf()
        except ConfigError:
            # A ring without BTF anywhere: fine when the user's files have the
            # types, or when no type is asked for.
            wanted = s.sample_type is not None or any(e.type_name for e in s.event_specs)
            if wanted and not (s.sample_btf or s.sample_header):
                raise
            return open_type_sources(s)
        where = f"BTF of the ring pinned at {self.loaded.path}"
        return open_type_sources(s, (where, btf), owned=[btf])

    def sample_codec(self, types: TypeSources) -> SampleCodec:
        if self.settings.sample_type is None:
            return SampleCodec.raw_only()
        return typed_codec(types, self.settings.sample_type)

    def exporters(self) -> list[Collector]:
        return []

    def kernel_stats(self) -> dict[str, Any]:
        return {"ring_pin": str(self.loaded.path), "map_id": self.loaded.info.id}

    def prepare_drain(self) -> None:
        """Nothing: the drain is the other loader's business."""

    def start_drain(self, ring: UserRingBuffer, stack: AsyncExitStack) -> DrainTrigger | None:
        return None

    def map_fd(self, name: str) -> lb.Fd:
        if name != self.loaded.info.name:
            raise ConfigError(
                f"--ring-pin {self.loaded.path}: of the other loader's maps only the ring "
                f"({self.loaded.info.name!r}) is known to ringbridge, not {name!r}"
            )
        return lb.obj_get(self.loaded.path)

    def describe(self) -> dict[str, str]:
        return {"backend": self.kind, "ring_pin": str(self.loaded.path)}
