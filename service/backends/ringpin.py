"""A user ring another loader pinned (``--ring-pin``): nothing of ours loaded or pinned.

Opened by :mod:`ringbridge.kernel.pinnedring`, locked by
:func:`ringbridge.kernel.pins.lock_ring_pin`. The other loader drains
(``external``), its programs' BTF gives the sample type, and the ring's size
is the pin's. There is no place of ours to keep the next seq, so seqs start
at 0 at every start.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

from prometheus_client.registry import Collector

from ..closing import Closing
from ..errors import ConfigError
from ..kernel import libbpf as lb
from ..kernel.pinnedring import open_ring_pin
from ..kernel.pins import lock_ring_pin
from ..kernel.ringbuf import UserRingBuffer
from ..producer.kick import DrainTrigger
from ..producer.task import SeqStore
from ..schema import SampleCodec
from ..settings import DrainMode, Settings

__all__ = ["RingPinBackend"]


class RingPinBackend:
    """The ring pinned at ``--ring-pin``, opened for our producer."""

    kind = "ring_pin"
    drain: DrainMode = "external"  # the loader that pinned it drains
    reused = True  # someone else's pins: never ours to forget
    waiting_flag_fd: int | None = None
    seq_store: SeqStore | None = None

    def __init__(self, settings: Settings) -> None:
        assert settings.ring_pin is not None
        self.settings = settings
        self.ring = open_ring_pin(
            settings.ring_pin,
            settings.ring_size,
            size_given="ring_size" in settings.model_fields_set,
        )

    @property
    def ring_fd(self) -> int:
        return self.ring.ring_fd

    @property
    def ring_size(self) -> int:
        return self.ring.ring_size

    @property
    def closed(self) -> bool:
        return self.ring.closed

    def lock(self) -> Closing:
        return lock_ring_pin(self.ring.path)

    def forget_pins(self) -> None:
        """Nothing: the pins are the other loader's."""

    def sample_codec(self) -> SampleCodec:
        if self.settings.sample_type is None:
            return SampleCodec.raw_only()
        with self.ring.btf() as btf:
            return SampleCodec.from_btf(
                btf, self.settings.sample_type, where=f"BTF of the ring pinned at {self.ring.path}"
            )

    def exporters(self) -> list[Collector]:
        return []

    def kernel_stats(self) -> dict[str, Any]:
        return {"ring_pin": str(self.ring.path), "map_id": self.ring.info.id}

    def prepare_drain(self) -> None:
        """Nothing: the drain is the other loader's business."""

    def start_drain(self, ring: UserRingBuffer, stack: AsyncExitStack) -> DrainTrigger | None:
        return None

    def map_fd(self, name: str) -> lb.Fd:
        if name != self.ring.info.name:
            raise ConfigError(
                f"--ring-pin {self.ring.path}: of the other loader's maps only the ring "
                f"({self.ring.info.name!r}) is known to ringbridge, not {name!r}"
            )
        return lb.obj_get(self.ring.path)

    def describe(self) -> dict[str, str]:
        return {"backend": self.kind, "ring_pin": str(self.ring.path)}

    def close(self) -> None:
        self.ring.close()
