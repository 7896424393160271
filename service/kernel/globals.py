"""The global variables of a BPF object: where each lives in its data section map.

clang puts a program's globals in ``.bss`` (zero-initialised), ``.data`` and
``.rodata`` (``const volatile``); libbpf turns each section into a one-entry
array map whose value is the whole section, and the object's BTF describes
the section as a DATASEC listing every variable with its offset, size and
type. That is all it takes to find a variable by name in the map's value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from . import libbpf as lb

__all__ = ["DATA_SECTIONS", "GlobalVar", "global_vars", "section_of"]

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
