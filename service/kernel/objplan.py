"""What to do with a user's BPF object before loading it: which ring, which sizes.

:func:`plan_object` opens the object (no load, no privileges), lists its maps
and programs, picks the user ring buffer map, decides the ``max_entries`` of
every map that needs one, and checks the drain program and the globals to
set (``--set-global``, :func:`ringbridge.kernel.globals.plan_globals`). Every refusal names
the object, the map or program, and the flag that fixes it, so a bad
configuration fails at start with one clear line rather than as a libbpf
EINVAL from the middle of a load.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from ..core import ring as core
from ..errors import ConfigError, RingbridgeError
from . import libbpf as lb
from .globals import GlobalValue, plan_globals
from .pins import pin_name

__all__ = ["MapSpec", "ObjectPlan", "ProgSpec", "plan_object"]

# Map types whose max_entries is a byte size with the ring rules (power of
# two, page multiple); every other map counts entries.
_RING_TYPES: Final = frozenset({lb.BPF_MAP_TYPE_RINGBUF, lb.BPF_MAP_TYPE_USER_RINGBUF})


@dataclass(frozen=True)
class MapSpec:
    name: str
    type: int
    max_entries: int  # as declared in the object (0: must be sized)
    key_size: int
    value_size: int
    internal: bool  # global data (.bss, .data, .rodata, .kconfig)

    @property
    def pin_name(self) -> str:
        return pin_name(self.name)


@dataclass(frozen=True)
class ProgSpec:
    name: str
    type: int
    section: str
    autoattach: bool


@dataclass(frozen=True)
class ObjectPlan:
    """A user object, inspected and checked, with the decisions made for its load."""

    path: Path
    ring_map: str
    ring_size: int
    maps: tuple[MapSpec, ...]
    programs: tuple[ProgSpec, ...]
    # map name -> max_entries set before load (the ring, maps given --map-size)
    sizes: Mapping[str, int] = field(default_factory=dict)
    drain_program: str | None = None
    # --set-global values, written after the load and before the attach
    globals: tuple[GlobalValue, ...] = ()

    def map(self, name: str) -> MapSpec:
        for m in self.maps:
            if m.name == name:
                return m
        raise KeyError(name)


def _names(items: Iterable[MapSpec | ProgSpec]) -> str:
    names = [i.name for i in items]
    return ", ".join(names) if names else "none"


def plan_object(
    path: Path,
    *,
    ring_size: int,
    ring_map: str | None = None,
    map_sizes: Mapping[str, int] | None = None,
    drain_program: str | None = None,
    set_globals: Mapping[str, int] | None = None,
) -> ObjectPlan:
    """Inspects the object at ``path`` and decides its load; ConfigError if it cannot work."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"BPF object {path} does not exist (--bpf-object)")
    try:
        with lb.BpfObject.open(path) as obj:
            maps = tuple(
                MapSpec(m.name, m.type, m.max_entries, m.key_size, m.value_size, m.is_internal)
                for m in obj.maps()
            )
            progs = tuple(ProgSpec(p.name, p.type, p.section, p.autoattach) for p in obj.programs())
            globals_ = plan_globals(obj, set_globals or {}, str(path))
    except ConfigError:
        raise
    except RingbridgeError as exc:
        raise ConfigError(f"cannot open BPF object {path}: {exc.message}") from exc

    rings = [m for m in maps if m.type == lb.BPF_MAP_TYPE_USER_RINGBUF]
    if ring_map is None:
        if not rings:
            raise ConfigError(
                f"BPF object {path} has no BPF_MAP_TYPE_USER_RINGBUF map (maps: {_names(maps)})"
            )
        if len(rings) > 1:
            raise ConfigError(
                f"BPF object {path} has several user ring buffer maps ({_names(rings)}): "
                "pick one with --ring-map NAME"
            )
        ring = rings[0]
    else:
        found = [m for m in maps if m.name == ring_map]
        if not found:
            raise ConfigError(
                f"--ring-map {ring_map}: BPF object {path} has no such map "
                f"(user ring buffer maps: {_names(rings)})"
            )
        ring = found[0]
        if ring.type != lb.BPF_MAP_TYPE_USER_RINGBUF:
            raise ConfigError(
                f"--ring-map {ring_map}: map of type {ring.type} in {path} is not a "
                f"BPF_MAP_TYPE_USER_RINGBUF (user ring buffer maps: {_names(rings)})"
            )

    requested = dict(map_sizes or {})
    by_name = {m.name: m for m in maps}
    unknown = sorted(set(requested) - set(by_name))
    if unknown:
        raise ConfigError(
            f"--map-size {unknown[0]}=...: BPF object {path} has no map {unknown[0]!r} "
            f"(maps: {_names(maps)})"
        )
    if ring.name in requested:
        raise ConfigError(
            f"--map-size {ring.name}=...: {ring.name} is the user ring; size it with --ring-size"
        )
    sizes: dict[str, int] = {ring.name: ring_size}
    for m in maps:
        if m is ring:
            continue
        size = requested.get(m.name)
        if size is None:
            if m.max_entries == 0 and not m.internal:
                raise ConfigError(
                    f"map {m.name!r} of {path} has max_entries 0 and no size was given: "
                    f"set one with --map-size {m.name}=SIZE"
                )
            continue
        if m.internal:
            raise ConfigError(f"--map-size {m.name}=...: global-data maps cannot be resized")
        if m.type in _RING_TYPES:
            try:
                core.check_ring_size(size, mmap.PAGESIZE)
            except RingbridgeError as exc:
                raise ConfigError(f"--map-size {m.name}={size}: {exc.message}") from exc
        if size >= 1 << 32:
            raise ConfigError(f"--map-size {m.name}={size}: max_entries is a 32-bit number")
        sizes[m.name] = size

    if drain_program is not None:
        found_p = [p for p in progs if p.name == drain_program]
        if not found_p:
            raise ConfigError(
                f"--drain-program {drain_program}: BPF object {path} has no such program "
                f"(programs: {_names(progs)})"
            )
        if found_p[0].type != lb.BPF_PROG_TYPE_SYSCALL:
            raise ConfigError(
                f"--drain-program {drain_program}: program of {path} in section "
                f'{found_p[0].section!r} is not SEC("syscall"); the service runs the drain '
                "program through BPF_PROG_TEST_RUN, which only syscall programs allow"
            )
    return ObjectPlan(
        path=path,
        ring_map=ring.name,
        ring_size=ring_size,
        maps=maps,
        programs=progs,
        sizes=sizes,
        drain_program=drain_program,
        globals=globals_,
    )
