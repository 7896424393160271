"""The one interface of a kernel side the service feeds: :class:`Backend`.

Every kind -- the built-in consumer, a user's object, a ring another loader
pinned -- offers the same things, so that the assembly, the metrics and the
API never ask which kind they hold:

- the ring: its fd and size, and the map of the flag telling the consumer a
  producer waits (if the kind has one);
- its pins: whether they were re-used, forgetting the ones a failed start
  created (the producer lock is the ring's own, taken by the library that
  maps it: :mod:`ringbridge.ring.lock`), and where ringbridge's own state
  records (the fleet cursor) live with them;
- how to recover when another writer touched its ring;
- where the next sample seq survives a restart (:class:`SeqStore`, or none);
- where sample and event types are found (the kind's BTF, then the user's
  ``--sample-btf`` files and ``--sample-header``), the sample codec, and what
  its maps declare as their values (to check those types against);
- its Prometheus exporters and the kernel part of ``/v1/stats``;
- the drain trigger for its mode, in two steps around the privilege drop,
  with its shutdown (quiesce, close) registered on the caller's exit stack;
- its maps by name, for readers of other maps of the object;
- ``close``.

A new kind implements this protocol and gets one line in
:func:`ringbridge.backends.open_backend`; a new place to keep the seq
implements :class:`SeqStore` and is returned by ``seq_store``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client.registry import Collector

from ..closing import Closing
from ..errors import RingbridgeError, SchemaError
from ..kernel import libbpf as lb
from ..kernel.drainer import NativeDrainer
from ..kernel.pins import STATE_PINS, unpin
from ..producer.contract import SeqStore
from ..producer.kick import DrainTrigger, Kicker
from ..ring import UserRingBuffer
from ..schema import SampleCodec, TypeSources, model
from ..schema.btf import BtfSource
from ..settings import DrainMode, Settings

__all__ = [
    "Backend",
    "LoadedBackend",
    "PinDirBackend",
    "SeqStore",
    "kick_trigger",
    "open_type_sources",
    "state_pin_under",
    "typed_codec",
]

log = logging.getLogger("ringbridge.backends")


class Backend(Protocol):
    """A kernel side the service feeds; see the module doc."""

    @property
    def kind(self) -> str:
        """``"builtin"``, ``"object"`` or ``"ring_pin"`` (for logs)."""

    @property
    def drain(self) -> DrainMode:
        """The drain mode in effect (decided from the settings and the kind)."""

    @property
    def ring_fd(self) -> int: ...

    @property
    def ring_size(self) -> int:
        """The ring's data size: the settings' or, for a ring pinned by another, the pin's."""

    @property
    def ring_name(self) -> str:
        """Where the ring is pinned, for messages."""

    @property
    def waiting_flag_fd(self) -> int | None:
        """An mmapable map whose first u32 tells the consumer a producer waits for
        space (the built-in ctl map); None: the consumer wakes the producer after
        every drain that consumed something."""

    @property
    def reused(self) -> bool:
        """Whether the kernel side was re-opened from existing pins."""

    @property
    def closed(self) -> bool: ...

    @property
    def seq_store(self) -> SeqStore | None:
        """Where the next sample seq survives a restart (None: seqs start at 0)."""

    def recovery_hint(self) -> str:
        """How to recover once another writer touched the ring (the service stopped
        committing): logged and served by ``/healthz`` and ``/readyz``."""

    def forget_pins(self) -> None:
        """Removes the pins this start created (a failed start leaves the pin dir as
        it found it); nothing when they were re-used or are not ours. Never raises."""

    def state_pin(self, name: str) -> Path:
        """Where ringbridge keeps its state record ``name`` (one of
        ``kernel.pins.STATE_PINS``) with this kind's pins, so that it lives
        and goes with them: in the pin set itself, or for a ring another
        loader pinned in ``--pin-dir`` (which then holds nothing else)."""

    def open_types(self) -> TypeSources:
        """Where sample and event types are found: this kind's BTF first, then the
        ``--sample-btf`` files, then the ``--sample-header`` (compiled now); the caller
        closes it (:func:`open_type_sources`)."""

    def sample_codec(self, types: TypeSources) -> SampleCodec:
        """The JSON sample codec (``--sample-type`` found in ``types``, or raw only)."""

    def declared_value(self, map_name: str) -> tuple[int, model.Type | None]:
        """What the kernel side's map ``map_name`` declares as its value:
        ``(value_size, type or None)``; ``(0, None)`` when nothing is known."""

    def exporters(self) -> list[Collector]:
        """Prometheus collectors of the kernel side, read at scrape time."""

    def kernel_stats(self) -> dict[str, Any]:
        """The ``kernel`` part of ``GET /v1/stats``."""

    def prepare_drain(self) -> None:
        """Sets up the kernel side for the drain mode; runs before the privilege drop."""

    def start_drain(self, ring: UserRingBuffer, stack: AsyncExitStack) -> DrainTrigger | None:
        """Starts what drains the ring (after the privilege drop: threads start without
        capabilities) and registers its shutdown on ``stack``; returns the trigger the
        producer tells after each commit, or None."""

    def map_fd(self, name: str) -> lb.Fd:
        """A new fd of the kernel side's map ``name`` (the caller closes it);
        ConfigError when it has no such map."""

    def describe(self) -> dict[str, str]:
        """What was loaded, as log fields."""

    def close(self) -> None:
        """Releases the fds (pins stay); idempotent."""


def state_pin_under(pin_dir: Path, name: str) -> Path:
    """``pin_dir / name`` for a state record of ringbridge's (``STATE_PINS``)."""
    if name not in STATE_PINS:
        raise ValueError(f"{name!r} is not one of ringbridge's state records {sorted(STATE_PINS)}")
    return pin_dir / name


def open_type_sources(
    settings: Settings,
    primary: tuple[str, BtfSource] | None = None,
    owned: Sequence[Closing] = (),
) -> TypeSources:
    """``primary`` (a kind's own BTF; ``owned`` closes with the sources), then the
    settings' ``--sample-btf`` files and ``--sample-header``."""
    return TypeSources.open(
        primary=primary,
        btf_files=settings.sample_btf,
        header=settings.sample_header,
        header_options=settings.header_options,
        owned=owned,
    )


def typed_codec(
    types: TypeSources,
    type_name: str,
    *,
    ring_map: str | None = None,
    declared: tuple[int, model.Type | None] = (0, None),
) -> SampleCodec:
    """The codec of ``--sample-type type_name``, checked against what the ring map declares."""
    flag = f"--sample-type {type_name}"
    found = types.find_for(type_name, flag, map_name=ring_map, declared=declared)
    try:
        return types.codec(found)
    except RingbridgeError as exc:
        raise SchemaError(f"{flag}: {exc.message}") from exc


def kick_trigger(prog_fd: int, ring: UserRingBuffer, stack: AsyncExitStack) -> Kicker:
    """``kick`` mode: the native worker runs the drain program ``prog_fd`` on request."""
    drainer = NativeDrainer(prog_fd, *ring.position_addresses())
    # Unwound before ring.close: the worker reads the ring's mapping.
    stack.callback(drainer.close)
    return Kicker(drainer)


class _Loaded(Protocol):
    """What the kernel layer's loaded kinds share (``LoadedRingbridge``, ``LoadedObject``,
    ``PinnedRing``)."""

    @property
    def ring_fd(self) -> int: ...
    @property
    def ring_size(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def close(self) -> None: ...


L = TypeVar("L", bound=_Loaded)


class LoadedBackend(Generic[L]):
    """A backend over one loaded kernel-layer object: the ring and ``close`` are its."""

    def __init__(self, settings: Settings, loaded: L) -> None:
        self.settings = settings
        self.loaded = loaded

    @property
    def ring_fd(self) -> int:
        return self.loaded.ring_fd

    @property
    def ring_size(self) -> int:
        return self.loaded.ring_size

    @property
    def closed(self) -> bool:
        return self.loaded.closed

    def declared_value(self, map_name: str) -> tuple[int, model.Type | None]:
        """Nothing known by default (the built-in consumer's and a pinned ring's maps)."""
        return 0, None

    def close(self) -> None:
        self.loaded.close()


class PinDirBackend(LoadedBackend[L]):
    """The kinds that pin under ``--pin-dir``: the producer lock and the forgetting."""

    def __init__(self, settings: Settings, loaded: L, drain: DrainMode, *, reused: bool) -> None:
        super().__init__(settings, loaded)
        self.pin_dir: Path = settings.pin_dir
        self._drain = drain
        self._reused = reused

    @property
    def drain(self) -> DrainMode:
        return self._drain

    @property
    def reused(self) -> bool:
        return self._reused

    @property
    def ring_name(self) -> str:
        return f"pin dir {self.pin_dir}"

    def recovery_hint(self) -> str:
        return (
            "stop the other writer (a second ringbridge, or another program writing "
            "this ring), then restart ringbridge; if drains keep failing "
            "(ringbridge_kernel_drain_errors: the ring is poisoned), run "
            f"`ringbridge unpin --pin-dir {self.pin_dir}` before the restart (it drops "
            "the ring's contents and the kernel state kept in the maps)"
        )

    def state_pin(self, name: str) -> Path:
        return state_pin_under(self.pin_dir, name)

    def forget_pins(self) -> None:
        if self._reused:
            return
        try:
            unpin(self.pin_dir)
        except (RingbridgeError, OSError) as exc:
            # After a privilege drop the pins may no longer be ours to remove;
            # say so, and let the start's own error be the one reported.
            log.warning(
                "failed start left its new pins behind",
                extra={
                    "pin_dir": str(self.pin_dir),
                    "reason": str(exc),
                    "fix": f"ringbridge unpin --pin-dir {self.pin_dir}",
                },
            )
