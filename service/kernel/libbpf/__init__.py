"""A thin, typed ctypes layer over ``libbpf.so.1`` (libbpf >= 1.1).

Only what ringbridge needs is wrapped. Raw pointers never leave this package:
callers get :class:`BpfObject`, :class:`BpfMap`, :class:`BpfProgram`,
:class:`Btf` and :class:`Fd`. Every failing call is translated into
:class:`~ringbridge.errors.KernelError` (or :class:`~ringbridge.errors.BpfObjectError`
for object-level operations) in exactly one place, :mod:`.library`, so
messages always carry the operation, the target and the errno.

Callers import the package (``from ..kernel import libbpf as lb``), whose
``__all__`` lists the public names once; its parts:

* :mod:`.library` -- loads libbpf, routes its log, translates its errors;
* :mod:`.structs` -- the C structures the calls take;
* :mod:`.fd` -- owned file descriptors;
* :mod:`.syscalls` -- bpf() commands on fds (pins, info, ids, test runs, map elements);
* :mod:`.btf` -- BTF kinds and records, read from an object or the kernel;
* :mod:`.members` -- an object's maps and programs, and links;
* :mod:`.objects` -- the object that owns them.
"""

from .btf import (
    BTF_INT_BOOL,
    BTF_INT_CHAR,
    BTF_INT_SIGNED,
    BTF_KIND_ARRAY,
    BTF_KIND_CONST,
    BTF_KIND_DATASEC,
    BTF_KIND_ENUM,
    BTF_KIND_ENUM64,
    BTF_KIND_FLOAT,
    BTF_KIND_FWD,
    BTF_KIND_INT,
    BTF_KIND_PTR,
    BTF_KIND_RESTRICT,
    BTF_KIND_STRUCT,
    BTF_KIND_TYPE_TAG,
    BTF_KIND_TYPEDEF,
    BTF_KIND_UNION,
    BTF_KIND_VAR,
    BTF_KIND_VOLATILE,
    Btf,
    BtfArray,
    BtfMember,
    BtfType,
    DatasecVar,
    FileBtf,
    KernelBtf,
)
from .fd import Fd, FdLike
from .library import LOGGER_NAME
from .members import BpfLink, BpfMap, BpfProgram
from .objects import BpfObject
from .syscalls import (
    BPF_F_MMAPABLE,
    BPF_MAP_TYPE_ARRAY,
    BPF_MAP_TYPE_PERCPU_ARRAY,
    BPF_MAP_TYPE_RINGBUF,
    BPF_MAP_TYPE_USER_RINGBUF,
    BPF_PROG_TYPE_SYSCALL,
    MapInfo,
    ProgInfo,
    lookup_percpu,
    map_create,
    map_info,
    map_keys,
    map_lookup,
    map_type_name,
    map_update,
    num_possible_cpus,
    obj_get,
    obj_pin,
    percpu_value_stride,
    prog_by_id,
    prog_ids,
    prog_info,
    prog_test_run,
)

__all__ = [
    "BPF_F_MMAPABLE",
    "BPF_MAP_TYPE_ARRAY",
    "BPF_MAP_TYPE_PERCPU_ARRAY",
    "BPF_MAP_TYPE_RINGBUF",
    "BPF_MAP_TYPE_USER_RINGBUF",
    "BPF_PROG_TYPE_SYSCALL",
    "BTF_INT_BOOL",
    "BTF_INT_CHAR",
    "BTF_INT_SIGNED",
    "BTF_KIND_ARRAY",
    "BTF_KIND_CONST",
    "BTF_KIND_DATASEC",
    "BTF_KIND_ENUM",
    "BTF_KIND_ENUM64",
    "BTF_KIND_FLOAT",
    "BTF_KIND_FWD",
    "BTF_KIND_INT",
    "BTF_KIND_PTR",
    "BTF_KIND_RESTRICT",
    "BTF_KIND_STRUCT",
    "BTF_KIND_TYPEDEF",
    "BTF_KIND_TYPE_TAG",
    "BTF_KIND_UNION",
    "BTF_KIND_VAR",
    "BTF_KIND_VOLATILE",
    "LOGGER_NAME",
    "BpfLink",
    "BpfMap",
    "BpfObject",
    "BpfProgram",
    "Btf",
    "BtfArray",
    "BtfMember",
    "BtfType",
    "DatasecVar",
    "Fd",
    "FdLike",
    "FileBtf",
    "KernelBtf",
    "MapInfo",
    "ProgInfo",
    "lookup_percpu",
    "map_create",
    "map_info",
    "map_keys",
    "map_lookup",
    "map_type_name",
    "map_update",
    "num_possible_cpus",
    "obj_get",
    "obj_pin",
    "percpu_value_stride",
    "prog_by_id",
    "prog_ids",
    "prog_info",
    "prog_test_run",
]
