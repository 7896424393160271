"""The global variables of a BPF object: where each lives in its data section map.

clang puts a program's globals in ``.bss`` (zero-initialised), ``.data`` and
``.rodata`` (``const volatile``); libbpf turns each section into a one-entry
array map whose value is the whole section, and the object's BTF describes
the section as a DATASEC listing every variable with its offset, size and
type. That is all it takes to find a variable by name in the map's value --
to read it (the metrics export) or to set it before the programs run
(``--set-global``, what a loader does with ``skel->bss->pid = getpid()``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from ..errors import ConfigError
from . import libbpf as lb

__all__ = [
    "DATA_SECTIONS",
    "GlobalValue",
    "GlobalVar",
    "global_vars",
    "plan_globals",
    "section_of",
    "write_globals",
]

#: The sections whose variables are state or configuration worth reading.
DATA_SECTIONS: Final = (".bss", ".data", ".rodata")


@dataclass(frozen=True)
class GlobalVar:
    name: str
    section: str  # ".bss", ".data", ".rodata"
    offset: int
    size: int
    type_id: int  # the variable's type (the VAR's target), in the object's BTF


def section_of(map_name: str) -> str | None:
    """The data section of a libbpf global-data map (``obj.bss`` -> ``.bss``), or None."""
    for sec in DATA_SECTIONS:
        if map_name.endswith(sec):
            return sec
    return None


def global_vars(btf: lb.Btf, section: str) -> list[GlobalVar]:
    """Every variable of ``section`` per the BTF (empty if the section has none)."""
    sec_id = btf.find_by_name_kind(section, lb.BTF_KIND_DATASEC)
    if sec_id is None:
        return []
    out = []
    for entry in btf.type_by_id(sec_id).datasec:
        var = btf.type_by_id(entry.var_type_id)
        if var.kind != lb.BTF_KIND_VAR:
            continue
        out.append(GlobalVar(var.name, section, entry.offset, entry.size, var.size_or_type))
    return out


#: The sections whose variables ``--set-global`` may write: ``.rodata`` is frozen
#: at load (and the verifier has pruned code by its values by then).
WRITABLE_SECTIONS: Final = (".bss", ".data")
_KEY0: Final = b"\0\0\0\0"


@dataclass(frozen=True)
class GlobalValue:
    """A value written into a global after the load, before the programs attach."""

    name: str
    map_name: str  # the section's map, e.g. "obj.bss"
    offset: int
    data: bytes


def _encode(btf: lb.Btf, var: GlobalVar, value: int, flag: str) -> bytes:
    t = btf.type_by_id(btf.resolve_type(var.type_id))
    bits = 8 * var.size
    if t.kind == lb.BTF_KIND_INT and t.int_encoding & lb.BTF_INT_SIGNED:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    elif t.kind == lb.BTF_KIND_INT:
        lo, hi = 0, (1 << bits) - 1
    elif t.kind in (lb.BTF_KIND_ENUM, lb.BTF_KIND_ENUM64):
        lo, hi = -(1 << (bits - 1)), (1 << bits) - 1  # enumerators may be either
    else:
        raise ConfigError(f"{flag}: global {var.name!r} is not an integer or an enum")
    if not lo <= value <= hi:
        raise ConfigError(f"{flag}: global {var.name!r} holds {lo}..{hi}")
    return value.to_bytes(var.size, "little", signed=value < 0)


def plan_globals(
    obj: lb.BpfObject, values: Mapping[str, int], where: str
) -> tuple[GlobalValue, ...]:
    """The ``--set-global NAME=VALUE`` writes for the opened ``obj``, checked (ConfigError
    naming the global and why): an integer or enum global of ``.bss`` or ``.data``,
    and a value that fits it."""
    if not values:
        return ()
    btf = obj.btf()
    section_maps = {section_of(m.name): m.name for m in obj.maps() if m.is_internal}
    known: dict[str, GlobalVar] = {}
    for section in DATA_SECTIONS:
        for g in global_vars(btf, section):
            known.setdefault(g.name, g)
    out = []
    for name, value in values.items():
        flag = f"--set-global {name}={value}"
        var = known.get(name)
        if var is None:
            have = ", ".join(sorted(known)) or "none"
            raise ConfigError(
                f"{flag}: BPF object {where} has no global {name!r} (globals: {have})"
            )
        if var.section not in WRITABLE_SECTIONS:
            raise ConfigError(
                f"{flag}: {name!r} is a const volatile ({var.section}) global, fixed when the "
                "object loads; ringbridge sets .bss and .data globals, after the load and "
                "before the programs attach"
            )
        data = _encode(btf, var, value, flag)
        out.append(GlobalValue(name, section_maps[var.section], var.offset, data))
    return tuple(out)


def write_globals(obj: lb.BpfObject, values: Iterable[GlobalValue]) -> None:
    """Writes the planned values into the loaded ``obj``'s section maps (read, patch, write:
    the other variables keep what they hold, also in a re-used pin set)."""
    by_map: dict[str, list[GlobalValue]] = {}
    for v in values:
        by_map.setdefault(v.map_name, []).append(v)
    for map_name, vals in by_map.items():
        m = obj.map(map_name)
        raw = bytearray(m.lookup(_KEY0))
        for v in vals:
            raw[v.offset : v.offset + len(v.data)] = v.data
        m.update(_KEY0, bytes(raw))
