"""Which kernel side the service feeds, decided from the settings.

- the built-in consumer (no ``--bpf-object``, or an object that carries the
  built-in consumer's maps and programs): loaded and pinned by
  :mod:`ringbridge.kernel.bpfobj`, with its counters, timer and kick;
- a user's object (``--bpf-object``): planned by
  :mod:`ringbridge.kernel.objplan`, loaded, pinned and attached by
  :mod:`ringbridge.kernel.userobj`;
- a ring another loader pinned (``--ring-pin``): opened and locked by
  :mod:`ringbridge.kernel.pinnedring`; nothing loaded, the drain external.

The drain mode of a user's object follows from what it brings: ``kick`` or
``timer`` need ``--drain-program`` (the service runs it after each commit, or
periodically); without one the object drains itself (``external``), which is
also the default when ``--drain`` is not given and no drain program is named.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from prometheus_client.registry import Collector

from ..errors import ConfigError, RingbridgeError
from ..kernel import bpfobj
from ..kernel import libbpf as lb
from ..kernel.objplan import plan_object
from ..kernel.pinnedring import PinnedRing, open_ring_pin
from ..kernel.userobj import LoadedObject, load_object
from ..schema import DEFAULT_SAMPLE_TYPE, SampleCodec
from ..settings import DrainMode, Settings

__all__ = [
    "Loaded",
    "build_codec",
    "build_exports",
    "drain_mode",
    "is_builtin_object",
    "load",
    "object_path",
]

Loaded = bpfobj.LoadedRingbridge | LoadedObject | PinnedRing

_BUILTIN_MAPS: Final = (bpfobj.RING_MAP, bpfobj.COUNTERS_MAP, bpfobj.CTL_MAP, bpfobj.TIMER_MAP)
_BUILTIN_PROGS: Final = (bpfobj.DRAIN_PROG, bpfobj.ARM_PROG, bpfobj.DISARM_PROG)


def object_path(settings: Settings) -> Path:
    return settings.bpf_object or bpfobj.default_object_path()


def is_builtin_object(path: Path) -> bool:
    """Whether the object is (a build of) the built-in consumer, by its map and program names."""
    try:
        with lb.BpfObject.open(path) as obj:
            maps = {m.name for m in obj.maps()}
            progs = {p.name for p in obj.programs()}
    except RingbridgeError as exc:
        raise ConfigError(f"cannot open BPF object {path}: {exc.message}") from exc
    return set(_BUILTIN_MAPS) <= maps and set(_BUILTIN_PROGS) <= progs


def _check_builtin_settings(settings: Settings) -> None:
    extra = [
        flag
        for flag, given in (
            ("--drain-program", settings.drain_program is not None),
            ("--map-size", bool(settings.map_size)),
            ("--export-map", bool(settings.export_map)),
        )
        if given
    ]
    if settings.ring_map not in (None, bpfobj.RING_MAP):
        extra.append("--ring-map")
    if extra:
        raise ConfigError(
            f"{', '.join(extra)}: only for your own --bpf-object; the built-in consumer "
            "has its own ring, drain programs and counters"
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


def load(settings: Settings) -> tuple[Loaded, DrainMode]:
    """Loads (or re-opens from pins) the kernel side the settings describe."""
    if settings.ring_pin is not None:
        ring = open_ring_pin(
            settings.ring_pin,
            settings.ring_size,
            size_given="ring_size" in settings.model_fields_set,
        )
        return ring, "external"
    path = object_path(settings)
    if settings.bpf_object is None or is_builtin_object(path):
        _check_builtin_settings(settings)
        loaded_b = bpfobj.load_default(path, settings.pin_dir, settings.ring_size)
        return loaded_b, drain_mode(settings, builtin=True)
    mode = drain_mode(settings, builtin=False)
    plan = plan_object(
        path,
        ring_size=settings.ring_size,
        ring_map=settings.ring_map,
        map_sizes=settings.map_size,
        drain_program=settings.drain_program,
    )
    return load_object(plan, settings.pin_dir, attach=settings.attach), mode


def build_codec(settings: Settings, loaded: Loaded) -> SampleCodec:
    """The JSON sample codec: the sample type's layout from the object's BTF.

    Without ``--sample-type`` a user's object takes binary batches and
    ``{"data": "<base64>"}`` samples only.
    """
    if isinstance(loaded, PinnedRing):
        if settings.sample_type is None:
            return SampleCodec.raw_only()
        with loaded.btf() as btf:
            return SampleCodec.from_btf(
                btf, settings.sample_type, where=f"BTF of the ring pinned at {loaded.path}"
            )
    path = object_path(settings)
    if isinstance(loaded, bpfobj.LoadedRingbridge):
        return SampleCodec.from_object(path, settings.sample_type or DEFAULT_SAMPLE_TYPE)
    if settings.sample_type is None:
        return SampleCodec.raw_only()
    try:
        return SampleCodec.from_object(path, settings.sample_type)
    except RingbridgeError as exc:
        raise ConfigError(f"--sample-type {settings.sample_type}: {exc.message}") from exc


def build_exports(settings: Settings, loaded: Loaded) -> list[Collector]:
    """``--export-map`` maps and (``--export-globals``) the globals of a user's object."""
    if not isinstance(loaded, LoadedObject):
        return []
    from .exported import build_exporters

    return list(build_exporters(loaded, settings.export_map, globals_=settings.export_globals))
