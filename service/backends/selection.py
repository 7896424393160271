"""Which kernel side the service feeds, decided from the settings, in one place.

- a ring another loader pinned (``--ring-pin``): :class:`~.ringpin.RingPinBackend`;
  nothing loaded, the drain external;
- the built-in consumer (no ``--bpf-object``, or an object that carries the
  built-in consumer's maps and programs): :class:`~.builtin.BuiltinBackend`,
  with its counters, timer and kick;
- a user's object (``--bpf-object``): :class:`~.userobject.ObjectBackend`.

The drain mode of a user's object follows from what it brings: ``kick`` or
``timer`` need ``--drain-program`` (the service runs it after each commit, or
periodically); without one the object drains itself (``external``), which is
also the default when ``--drain`` is not given and no drain program is named.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, RingbridgeError
from ..kernel import libbpf as lb
from ..kernel.bpfobj import default_object_path
from ..kernel.pins import (
    BUILTIN_MAPS,
    BUILTIN_PROGS,
    RING_MAP,
    keep_private,
    retire_legacy_lock,
)
from ..settings import DrainMode, Settings
from .base import Backend
from .builtin import BuiltinBackend
from .ringpin import RingPinBackend
from .userobject import ObjectBackend

__all__ = ["drain_mode", "is_builtin_object", "open_backend"]


def is_builtin_object(path: Path) -> bool:
    """Whether the object is (a build of) the built-in consumer, by its map and program names."""
    try:
        with lb.BpfObject.open(path) as obj:
            maps = {m.name for m in obj.maps()}
            progs = {p.name for p in obj.programs()}
    except RingbridgeError as exc:
        raise ConfigError(f"cannot open BPF object {path}: {exc.message}") from exc
    return set(BUILTIN_MAPS) <= maps and set(BUILTIN_PROGS) <= progs


def _check_builtin_settings(settings: Settings) -> None:
    extra = [
        flag
        for flag, given in (
            ("--drain-program", settings.drain_program is not None),
            ("--map-size", bool(settings.map_size)),
            ("--export-map", bool(settings.export_map)),
            ("--event-map", bool(settings.event_map)),
            ("--set-global", bool(settings.set_global)),
        )
        if given
    ]
    if settings.ring_map not in (None, RING_MAP):
        extra.append("--ring-map")
    if extra:
        events = (
            ", and no kernel ring buffer (--event-pin reads one another loader pinned)"
            if settings.event_map
            else ""
        )
        raise ConfigError(
            f"{', '.join(extra)}: only for your own --bpf-object; the built-in consumer "
            f"has its own ring, drain programs and counters{events}"
        )


def drain_mode(settings: Settings, builtin: bool) -> DrainMode:
    """The drain mode in effect (see the module doc)."""
    if builtin:
        return settings.drain
    explicit = "drain" in settings.model_fields_set
    if not explicit:
        return "kick" if settings.drain_program is not None else "external"
    if settings.drain in ("timer", "kick") and settings.drain_program is None:
        raise ConfigError(
            f"--drain {settings.drain} with your own BPF object needs --drain-program NAME "
            '(a SEC("syscall") program of the object that drains the ring), '
            "or --drain external if the object drains the ring itself"
        )
    if settings.drain == "external" and settings.drain_program is not None:
        raise ConfigError(
            "--drain-program is only used with --drain timer|kick; drop it for --drain external"
        )
    return settings.drain


def open_backend(settings: Settings) -> Backend:
    """Loads (or re-opens from pins) the kernel side the settings describe."""
    if settings.ring_pin is not None:
        return RingPinBackend(settings, settings.ring_pin)
    # An older ringbridge on these pins would not see the ring's own lock.
    retire_legacy_lock(settings.pin_dir)
    path = settings.bpf_object or default_object_path()
    backend: Backend
    if settings.bpf_object is None or is_builtin_object(path):
        _check_builtin_settings(settings)
        backend = BuiltinBackend(settings, path, drain_mode(settings, builtin=True))
    else:
        backend = ObjectBackend(settings, path, drain_mode(settings, builtin=False))
    keep_private(settings.pin_dir)
    return backend
