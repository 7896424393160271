"""A thin, typed ctypes layer over ``libbpf.so.1`` (libbpf >= 1.1).

Only what ringbridge needs is wrapped. Raw pointers never leave this module:
callers get :class:`BpfObject`, :class:`BpfMap`, :class:`BpfProgram`,
:class:`Btf` and :class:`Fd`. Every failing call is translated into
:class:`~ringbridge.errors.KernelError` (or :class:`~ringbridge.errors.BpfObjectError`
for object-level operations) in exactly one place, :func:`_check_int` /
:func:`_check_ptr`, so messages always carry the operation, the target and
the errno.

libbpf 1.x is always in "strict" mode: functions returning a pointer return
NULL and set ``errno``; functions returning ``int`` return ``-errno`` (and set
``errno`` too). ``use_errno=True`` makes ctypes keep a private copy of errno
around each call, which is what :func:`ctypes.get_errno` reads back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno as _errno
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Final

from ringbridge.closing import Closing
from ringbridge.errors import BpfObjectError, KernelError
from ringbridge.kernel.libc import libc as shared_libc

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
    "prog_by_id",
    "prog_ids",
    "prog_info",
    "prog_test_run",
]

LOGGER_NAME: Final = "ringbridge.libbpf"
_log = logging.getLogger(LOGGER_NAME)

# enum bpf_map_type / bpf_prog_type values we check for (uapi, stable ABI).
BPF_MAP_TYPE_ARRAY: Final = 2
BPF_MAP_TYPE_PERCPU_ARRAY: Final = 6
BPF_MAP_TYPE_USER_RINGBUF: Final = 31
BPF_MAP_TYPE_RINGBUF: Final = 27
BPF_PROG_TYPE_SYSCALL: Final = 31
BPF_F_MMAPABLE: Final = 1 << 10

# BTF kinds and int encodings (uapi linux/btf.h).
BTF_KIND_INT: Final = 1
BTF_KIND_PTR: Final = 2
BTF_KIND_ARRAY: Final = 3
BTF_KIND_STRUCT: Final = 4
BTF_KIND_UNION: Final = 5
BTF_KIND_ENUM: Final = 6
BTF_KIND_FWD: Final = 7
BTF_KIND_TYPEDEF: Final = 8
BTF_KIND_VOLATILE: Final = 9
BTF_KIND_CONST: Final = 10
BTF_KIND_RESTRICT: Final = 11
BTF_KIND_VAR: Final = 14
BTF_KIND_DATASEC: Final = 15
BTF_KIND_FLOAT: Final = 16
BTF_KIND_TYPE_TAG: Final = 18
BTF_KIND_ENUM64: Final = 19
BTF_INT_SIGNED: Final = 1
BTF_INT_CHAR: Final = 2
BTF_INT_BOOL: Final = 4

_LIBBPF_WARN: Final = 0
_LIBBPF_INFO: Final = 1
_PRINT_LEVELS: Final = {_LIBBPF_WARN: logging.WARNING, _LIBBPF_INFO: logging.INFO}
# Verifier logs arrive as one message; large enough to keep them whole.
_PRINT_BUF_SIZE: Final = 64 * 1024
_BPF_OBJ_NAME_LEN: Final = 16


# --------------------------------------------------------------------------
# C structures (layouts from /usr/include/bpf/bpf.h and linux/bpf.h)
# --------------------------------------------------------------------------


class _TestRunOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("data_in", ctypes.c_void_p),
        ("data_out", ctypes.c_void_p),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("ctx_in", ctypes.c_void_p),
        ("ctx_out", ctypes.c_void_p),
        ("ctx_size_in", ctypes.c_uint32),
        ("ctx_size_out", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("repeat", ctypes.c_int),
        ("duration", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("cpu", ctypes.c_uint32),
        ("batch_size", ctypes.c_uint32),
    ]


class _MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * _BPF_OBJ_NAME_LEN),
        ("ifindex", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
    ]


class _ProgInfoHead(ctypes.Structure):
    # Only the head of struct bpf_prog_info, up to `btf_id`: the kernel copies
    # min(its size, ours), so a prefix is a valid request.
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * _BPF_OBJ_NAME_LEN),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
    ]


class _MapCreateOpts(ctypes.Structure):
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("btf_fd", ctypes.c_uint32),
        ("btf_key_type_id", ctypes.c_uint32),
        ("btf_value_type_id", ctypes.c_uint32),
        ("btf_vmlinux_value_type_id", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("map_extra", ctypes.c_uint64),
        ("numa_node", ctypes.c_uint32),
        ("map_ifindex", ctypes.c_uint32),
    ]


class _BtfType(ctypes.Structure):
    _fields_ = [
        ("name_off", ctypes.c_uint32),
        ("info", ctypes.c_uint32),
        ("size_or_type", ctypes.c_uint32),
    ]


class _BtfMember(ctypes.Structure):
    _fields_ = [
        ("name_off", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("offset", ctypes.c_uint32),
    ]


class _BtfArray(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("index_type", ctypes.c_uint32),
        ("nelems", ctypes.c_uint32),
    ]


# int (*)(enum libbpf_print_level, const char *fmt, va_list ap).
# va_list is passed as a pointer on both ABIs we run on: on x86-64 it is an
# array type (decays to a pointer); on arm64 it is a 32-byte struct, which
# AAPCS64 passes by reference to a copy. Either way we only forward the
# pointer to vsnprintf, which takes it the same way.
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


# --------------------------------------------------------------------------
# Library loading and prototypes
# --------------------------------------------------------------------------

_P = ctypes.c_void_p
_I = ctypes.c_int
_U32 = ctypes.c_uint32
_S = ctypes.c_char_p

_PROTOTYPES: Final[dict[str, tuple[object, list[object]]]] = {
    "bpf_object__open_file": (_P, [_S, _P]),
    "bpf_object__load": (_I, [_P]),
    "bpf_object__close": (None, [_P]),
    "bpf_object__find_map_by_name": (_P, [_P, _S]),
    "bpf_object__find_program_by_name": (_P, [_P, _S]),
    "bpf_object__next_map": (_P, [_P, _P]),
    "bpf_object__next_program": (_P, [_P, _P]),
    "bpf_object__btf": (_P, [_P]),
    "bpf_map__name": (_S, [_P]),
    "bpf_map__fd": (_I, [_P]),
    "bpf_map__type": (_I, [_P]),
    "bpf_map__set_max_entries": (_I, [_P, _U32]),
    "bpf_map__max_entries": (_U32, [_P]),
    "bpf_map__value_size": (_U32, [_P]),
    "bpf_map__key_size": (_U32, [_P]),
    "bpf_map__pin": (_I, [_P, _S]),
    "bpf_map__set_pin_path": (_I, [_P, _S]),
    "bpf_program__fd": (_I, [_P]),
    "bpf_program__name": (_S, [_P]),
    "bpf_program__pin": (_I, [_P, _S]),
    "bpf_program__type": (_I, [_P]),
    "bpf_program__section_name": (_S, [_P]),
    "bpf_program__autoattach": (ctypes.c_bool, [_P]),
    "bpf_program__attach": (_P, [_P]),
    "bpf_link__destroy": (_I, [_P]),
    "bpf_map__is_internal": (ctypes.c_bool, [_P]),
    "bpf_map_create": (_I, [_I, _S, _U32, _U32, _U32, ctypes.POINTER(_MapCreateOpts)]),
    "bpf_map_get_next_key": (_I, [_I, _P, _P]),
    "btf__load_from_kernel_by_id": (_P, [_U32]),
    "btf__parse": (_P, [_S, _P]),
    "bpf_map__btf_value_type_id": (_U32, [_P]),
    "bpf_prog_get_next_id": (_I, [_U32, ctypes.POINTER(_U32)]),
    "bpf_prog_get_fd_by_id": (_I, [_U32]),
    "btf__free": (None, [_P]),
    "bpf_obj_get": (_I, [_S]),
    "bpf_obj_pin": (_I, [_I, _S]),
    "bpf_map_lookup_elem": (_I, [_I, _P, _P]),
    "bpf_map_update_elem": (_I, [_I, _P, _P, ctypes.c_uint64]),
    "bpf_prog_test_run_opts": (_I, [_I, ctypes.POINTER(_TestRunOpts)]),
    "bpf_obj_get_info_by_fd": (_I, [_I, _P, ctypes.POINTER(_U32)]),
    "libbpf_num_possible_cpus": (_I, []),
    "libbpf_bpf_map_type_str": (_S, [_I]),
    "libbpf_set_print": (_P, [_PRINT_FN]),
    "btf__find_by_name_kind": (ctypes.c_int32, [_P, _S, _U32]),
    "btf__type_by_id": (ctypes.POINTER(_BtfType), [_P, _U32]),
    "btf__name_by_offset": (_S, [_P, _U32]),
    "btf__resolve_type": (_I, [_P, _U32]),
}

_lock = threading.Lock()
_lib_handle: ctypes.CDLL | None = None
_libc_handle: ctypes.CDLL | None = None
# The installed print callback; a module global so it outlives every call
# (a collected CFUNCTYPE object would leave libbpf calling freed memory).
_print_callback: object = None


def _lib() -> ctypes.CDLL:
    """Loads libbpf once, declares prototypes, and routes its log to logging."""
    global _lib_handle
    if _lib_handle is not None:
        return _lib_handle
    with _lock:
        if _lib_handle is None:
            try:
                lib = ctypes.CDLL("libbpf.so.1", use_errno=True)
            except OSError as exc:
                raise KernelError(
                    "dlopen", "libbpf.so.1", _errno.ENOENT, f"{exc}; install libbpf1 (>= 1.1)"
                ) from exc
            for name, (restype, argtypes) in _PROTOTYPES.items():
                try:
                    fn = getattr(lib, name)
                except AttributeError as exc:
                    raise KernelError(
                        "dlsym", name, _errno.ENOSYS, "libbpf.so.1 is too old (need >= 1.1)"
                    ) from exc
                fn.restype = restype
                fn.argtypes = argtypes
            _install_print(lib)
            _lib_handle = lib
    return _lib_handle


def _libc() -> ctypes.CDLL:
    global _libc_handle
    if _libc_handle is None:
        libc = shared_libc()
        libc.vsnprintf.restype = ctypes.c_int
        libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, _P]
        _libc_handle = libc
    return _libc_handle


def _on_libbpf_print(level: int, fmt: bytes | None, ap: int | None) -> int:
    # Runs inside libbpf with the GIL re-acquired by ctypes: it must never
    # raise (an exception here is printed to stderr and swallowed) and must
    # format cheaply when the level is off.
    try:
        py_level = _PRINT_LEVELS.get(level, logging.DEBUG)
        if fmt is None or not _log.isEnabledFor(py_level):
            return 0
        buf = ctypes.create_string_buffer(_PRINT_BUF_SIZE)
        # A va_list can be consumed once: format into one big buffer and
        # accept truncation rather than re-running vsnprintf.
        _libc().vsnprintf(buf, _PRINT_BUF_SIZE, fmt, ap)
        text = buf.value.decode("utf-8", "replace").strip("\n")
        if text:
            _log.log(py_level, "%s", text)
    except Exception:  # nothing may escape into C
        return 0
    return 0


def _install_print(lib: ctypes.CDLL) -> None:
    global _print_callback
    callback = _PRINT_FN(_on_libbpf_print)
    lib.libbpf_set_print(callback)
    _print_callback = callback


# --------------------------------------------------------------------------
# The one translation point from libbpf's error conventions to our errors
# --------------------------------------------------------------------------


def _raise(op: str, target: str, err: int, *, obj: bool, detail: str = "") -> None:
    cls = BpfObjectError if obj else KernelError
    raise cls(op, target, err or _errno.EIO, detail)


def _check_int(rc: int, op: str, target: str, *, obj: bool = False, detail: str = "") -> int:
    """Returns ``rc`` if non-negative, else raises with errno ``-rc``."""
    if rc < 0:
        # libbpf returns -errno; fall back to errno for the rare raw syscall
        # wrapper that returns -1.
        err = -rc if rc != -1 else (ctypes.get_errno() or 1)
        _raise(op, target, err, obj=obj, detail=detail)
    return rc


def _check_ptr(ptr: int | None, op: str, target: str, *, obj: bool = False) -> int:
    """Returns the pointer if non-NULL, else raises with the thread's errno."""
    if not ptr:
        _raise(op, target, ctypes.get_errno(), obj=obj)
    assert ptr is not None
    return ptr


# --------------------------------------------------------------------------
# File descriptors
# --------------------------------------------------------------------------


class Fd(Closing):
    """An owned file descriptor: closes once, usable as a context manager.

    There is deliberately no ``__del__``: a collected temporary would close a
    number someone still uses (and the kernel may reuse it for another file).
    """

    __slots__ = ("_fd", "_what")

    def __init__(self, fd: int, what: str = "") -> None:
        if fd < 0:
            raise ValueError(f"invalid fd {fd}")
        self._fd: int = fd
        self._what = what

    @property
    def fd(self) -> int:
        if self._fd < 0:
            raise KernelError("use fd", self._what or "closed fd", _errno.EBADF)
        return self._fd

    def fileno(self) -> int:
        return self.fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def detach(self) -> int:
        """Gives up ownership and returns the raw fd."""
        fd = self.fd
        self._fd = -1
        return fd

    def dup(self) -> Fd:
        return Fd(os.dup(self.fd), self._what)

    def __repr__(self) -> str:
        state = "closed" if self.closed else str(self._fd)
        return f"Fd({state}{', ' + self._what if self._what else ''})"


FdLike = int | Fd


def _num(fd: FdLike) -> int:
    return fd.fd if isinstance(fd, Fd) else fd


def _fd_target(fd: FdLike, name: str | None) -> str:
    return name if name else f"fd {_num(fd)}"


# --------------------------------------------------------------------------
# fd-level helpers (work on pins re-opened without an object)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class MapInfo:
    type: int
    id: int
    key_size: int
    value_size: int
    max_entries: int
    map_flags: int
    name: str
    btf_id: int
    btf_key_type_id: int
    btf_value_type_id: int
    map_extra: int


@dataclass(frozen=True)
class ProgInfo:
    type: int
    id: int
    name: str
    tag: bytes
    btf_id: int = 0
    map_ids: tuple[int, ...] = ()


def num_possible_cpus() -> int:
    return _check_int(_lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus", "cpus")


def obj_get(path: str | os.PathLike[str]) -> Fd:
    """Opens a bpffs pin; the caller owns (and must close) the returned fd."""
    target = os.fspath(path)
    fd = _check_int(_lib().bpf_obj_get(os.fsencode(target)), "bpf_obj_get", target)
    return Fd(fd, target)


def obj_pin(fd: FdLike, path: str | os.PathLike[str]) -> None:
    target = os.fspath(path)
    _check_int(_lib().bpf_obj_pin(_num(fd), os.fsencode(target)), "bpf_obj_pin", target)


def _get_info(fd: FdLike, info: ctypes.Structure, op: str, name: str | None) -> None:
    size = _U32(ctypes.sizeof(info))
    rc = _lib().bpf_obj_get_info_by_fd(_num(fd), ctypes.byref(info), ctypes.byref(size))
    _check_int(rc, op, _fd_target(fd, name))


def map_info(fd: FdLike, *, name: str | None = None) -> MapInfo:
    info = _MapInfo()
    _get_info(fd, info, "bpf_map_get_info_by_fd", name)
    return MapInfo(
        type=info.type,
        id=info.id,
        key_size=info.key_size,
        value_size=info.value_size,
        max_entries=info.max_entries,
        map_flags=info.map_flags,
        name=info.name.decode("utf-8", "replace"),
        btf_id=info.btf_id,
        btf_key_type_id=info.btf_key_type_id,
        btf_value_type_id=info.btf_value_type_id,
        map_extra=info.map_extra,
    )


def map_type_name(map_type: int) -> str:
    """``BPF_MAP_TYPE_*`` name of a map type number (libbpf's table; the number
    itself when libbpf does not know it)."""
    name: bytes | None = _lib().libbpf_bpf_map_type_str(map_type)
    if not name:
        return f"map type {map_type}"
    return "BPF_MAP_TYPE_" + name.decode().upper()


def prog_info(fd: FdLike, *, name: str | None = None, map_ids: bool = False) -> ProgInfo:
    """The program's info; with ``map_ids``, also the ids of the maps it uses."""
    info = _ProgInfoHead()
    _get_info(fd, info, "bpf_prog_get_info_by_fd", name)
    ids: tuple[int, ...] = ()
    if map_ids and info.nr_map_ids:
        # Second call with a buffer for the ids the first one counted.
        buf = (ctypes.c_uint32 * info.nr_map_ids)()
        again = _ProgInfoHead()
        again.nr_map_ids = info.nr_map_ids
        again.map_ids = ctypes.addressof(buf)
        _get_info(fd, again, "bpf_prog_get_info_by_fd", name)
        ids = tuple(buf[: min(again.nr_map_ids, info.nr_map_ids)])
    return ProgInfo(
        type=info.type,
        id=info.id,
        name=info.name.decode("utf-8", "replace"),
        tag=bytes(info.tag),
        btf_id=info.btf_id,
        map_ids=ids,
    )


def prog_ids() -> Iterator[int]:
    """Ids of every loaded BPF program (needs CAP_SYS_ADMIN)."""
    cur = _U32(0)
    nxt = _U32(0)
    while True:
        rc = _lib().bpf_prog_get_next_id(cur.value, ctypes.byref(nxt))
        if rc == -_errno.ENOENT:
            return
        _check_int(rc, "bpf_prog_get_next_id", f"after id {cur.value}")
        yield nxt.value
        cur.value = nxt.value


def prog_by_id(prog_id: int) -> Fd:
    fd = _lib().bpf_prog_get_fd_by_id(prog_id)
    return Fd(_check_int(fd, "bpf_prog_get_fd_by_id", f"program id {prog_id}"), f"prog {prog_id}")


def prog_test_run(prog_fd: FdLike, ctx: bytes | None = None, *, name: str | None = None) -> int:
    """Runs a program once through BPF_PROG_TEST_RUN; returns its signed retval.

    The syscall itself failing raises :class:`KernelError`; a program that
    *returns* a negative errno is the caller's business (it is the value).
    """
    opts = _TestRunOpts()
    opts.sz = ctypes.sizeof(opts)
    ctx_buf = None
    if ctx:
        ctx_buf = ctypes.create_string_buffer(ctx, len(ctx))
        opts.ctx_in = ctypes.cast(ctx_buf, ctypes.c_void_p)
        opts.ctx_size_in = len(ctx)
    rc = _lib().bpf_prog_test_run_opts(_num(prog_fd), ctypes.byref(opts))
    _check_int(rc, "bpf_prog_test_run_opts", _fd_target(prog_fd, name))
    # retval is the program's u32 r0; our programs return int (errno < 0).
    return ctypes.c_int32(opts.retval).value


def map_lookup(fd: FdLike, key: bytes, value_size: int, *, name: str | None = None) -> bytes:
    value = ctypes.create_string_buffer(value_size)
    key_buf = ctypes.create_string_buffer(key, len(key))
    rc = _lib().bpf_map_lookup_elem(_num(fd), key_buf, value)
    _check_int(rc, "bpf_map_lookup_elem", _fd_target(fd, name))
    return value.raw


def map_update(
    fd: FdLike, key: bytes, value: bytes, flags: int = 0, *, name: str | None = None
) -> None:
    key_buf = ctypes.create_string_buffer(key, len(key))
    value_buf = ctypes.create_string_buffer(value, len(value))
    rc = _lib().bpf_map_update_elem(_num(fd), key_buf, value_buf, flags)
    _check_int(rc, "bpf_map_update_elem", _fd_target(fd, name))


def map_create(
    map_type: int,
    name: str,
    key_size: int,
    value_size: int,
    max_entries: int,
    *,
    map_flags: int = 0,
) -> Fd:
    """Creates a map without an object (``bpf_map_create``); the caller owns the fd."""
    opts = _MapCreateOpts()
    opts.sz = ctypes.sizeof(opts)
    opts.map_flags = map_flags
    fd = _lib().bpf_map_create(
        map_type, name.encode(), key_size, value_size, max_entries, ctypes.byref(opts)
    )
    return Fd(_check_int(fd, "bpf_map_create", name), name)


def map_keys(fd: FdLike, key_size: int, *, name: str | None = None) -> Iterator[bytes]:
    """Every key of a map, in the kernel's iteration order.

    A key deleted while iterating makes the kernel restart from the first
    key (hash maps): a scrape may then see an entry twice, never loop forever
    because the number of steps is bounded by the caller reading values.
    """
    key = ctypes.create_string_buffer(key_size)
    nxt = ctypes.create_string_buffer(key_size)
    cur: ctypes.Array[ctypes.c_char] | None = None
    while True:
        rc = _lib().bpf_map_get_next_key(_num(fd), cur, nxt)
        if rc == -_errno.ENOENT:
            return
        _check_int(rc, "bpf_map_get_next_key", _fd_target(fd, name))
        yield nxt.raw
        ctypes.memmove(key, nxt, key_size)
        cur = key


def percpu_value_stride(value_size: int) -> int:
    """Per-CPU values are laid out 8-byte aligned, one per possible CPU."""
    return (value_size + 7) & ~7


def lookup_percpu(
    fd: FdLike, key: bytes, value_size: int, *, name: str | None = None
) -> list[bytes]:
    """Reads a per-CPU map element: one ``value_size`` bytes value per possible CPU."""
    stride = percpu_value_stride(value_size)
    ncpus = num_possible_cpus()
    raw = map_lookup(fd, key, stride * ncpus, name=name)
    return [raw[i * stride : i * stride + value_size] for i in range(ncpus)]


# --------------------------------------------------------------------------
# BTF
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class BtfMember:
    name: str
    type_id: int
    bit_offset: int
    bitfield_size: int  # 0 unless the member is a bitfield


@dataclass(frozen=True)
class BtfArray:
    elem_type_id: int
    index_type_id: int
    nelems: int


@dataclass(frozen=True)
class DatasecVar:
    """One variable of a BTF_KIND_DATASEC (a global of ``.bss``, ``.data``...)."""

    var_type_id: int  # the BTF_KIND_VAR; its size_or_type is the variable's type
    offset: int
    size: int


@dataclass(frozen=True)
class BtfType:
    """One decoded ``struct btf_type`` plus the kind-specific data we use."""

    id: int
    kind: int
    name: str
    vlen: int
    kflag: bool
    # `size` for INT/ENUM/STRUCT/UNION/FLOAT/ENUM64; `type` for the
    # reference kinds (PTR, TYPEDEF, CONST, VOLATILE, ...).
    size_or_type: int
    int_encoding: int = 0
    int_bits: int = 0
    int_offset: int = 0
    members: tuple[BtfMember, ...] = ()
    array: BtfArray | None = None
    datasec: tuple[DatasecVar, ...] = ()
    # ENUM/ENUM64: (enumerator name, value), signed when ``kflag`` is set.
    enumerators: tuple[tuple[str, int], ...] = ()


class Btf:
    """The BTF of an open :class:`BpfObject`; owned (and freed) by the object."""

    def __init__(self, owner: BpfObject | None, ptr: int) -> None:
        self._owner = owner
        self._ptr = ptr

    def _p(self) -> int:
        assert self._owner is not None
        self._owner._require_open("btf")
        return self._ptr

    @property
    def where(self) -> str:
        """Where this BTF comes from, for error messages."""
        return str(self._owner.path) if self._owner is not None else "BTF"

    def find_by_name_kind(self, name: str, kind: int) -> int | None:
        """Type id of ``name`` of ``kind``, or None when absent."""
        rc = int(_lib().btf__find_by_name_kind(self._p(), name.encode(), kind))
        if rc == -_errno.ENOENT:
            return None
        return _check_int(rc, "btf__find_by_name_kind", f"{self.where}:{name}", obj=True)

    def name_by_offset(self, offset: int) -> str:
        raw = _lib().btf__name_by_offset(self._p(), offset)
        return raw.decode("utf-8", "replace") if raw else ""

    def resolve_type(self, type_id: int) -> int:
        """Strips typedef/const/volatile/restrict/type_tag off ``type_id``."""
        rc = int(_lib().btf__resolve_type(self._p(), type_id))
        return _check_int(rc, "btf__resolve_type", f"{self.where}:type {type_id}", obj=True)

    def type_by_id(self, type_id: int) -> BtfType:
        ptr = _lib().btf__type_by_id(self._p(), type_id)
        if not ptr:
            _raise(
                "btf__type_by_id",
                f"{self.where}:type {type_id}",
                ctypes.get_errno() or _errno.EINVAL,
                obj=True,
            )
        t = ptr.contents
        kind = (t.info >> 24) & 0x1F
        vlen = t.info & 0xFFFF
        kflag = bool(t.info >> 31)
        base = BtfType(
            id=type_id,
            kind=kind,
            name=self.name_by_offset(t.name_off),
            vlen=vlen,
            kflag=kflag,
            size_or_type=t.size_or_type,
        )
        # Kind-specific data follows the fixed 12-byte header in memory.
        tail = ctypes.addressof(t) + ctypes.sizeof(_BtfType)
        if kind == BTF_KIND_INT:
            enc = ctypes.c_uint32.from_address(tail).value
            return dataclasses.replace(
                base,
                int_encoding=(enc >> 24) & 0x0F,
                int_offset=(enc >> 16) & 0xFF,
                int_bits=enc & 0xFF,
            )
        if kind == BTF_KIND_ARRAY:
            arr = _BtfArray.from_address(tail)
            return dataclasses.replace(base, array=BtfArray(arr.type, arr.index_type, arr.nelems))
        if kind in (BTF_KIND_STRUCT, BTF_KIND_UNION):
            members = []
            for i in range(vlen):
                m = _BtfMember.from_address(tail + i * ctypes.sizeof(_BtfMember))
                # With kind_flag set, offset packs (bitfield_size << 24 | bit_offset).
                if kflag:
                    bit_off, bf_size = m.offset & 0xFFFFFF, m.offset >> 24
                else:
                    bit_off, bf_size = m.offset, 0
                members.append(BtfMember(self.name_by_offset(m.name_off), m.type, bit_off, bf_size))
            return dataclasses.replace(base, members=tuple(members))
        if kind == BTF_KIND_DATASEC:
            # struct btf_var_secinfo {u32 type; u32 offset; u32 size;}
            raw = (ctypes.c_uint32 * (3 * vlen)).from_address(tail)
            secs = tuple(
                DatasecVar(raw[3 * i], raw[3 * i + 1], raw[3 * i + 2]) for i in range(vlen)
            )
            return dataclasses.replace(base, datasec=secs)
        if kind in (BTF_KIND_ENUM, BTF_KIND_ENUM64):
            return dataclasses.replace(base, enumerators=self._enumerators(tail, kind, vlen, kflag))
        return base

    def _enumerators(
        self, tail: int, kind: int, vlen: int, signed: bool
    ) -> tuple[tuple[str, int], ...]:
        # struct btf_enum {u32 name_off; s32 val} / btf_enum64 {name_off; lo32; hi32}.
        words = 2 if kind == BTF_KIND_ENUM else 3
        raw = (ctypes.c_uint32 * (words * vlen)).from_address(tail)
        bits = 32 if kind == BTF_KIND_ENUM else 64
        out = []
        for i in range(vlen):
            name_off, lo = raw[i * words], raw[i * words + 1]
            value = lo if kind == BTF_KIND_ENUM else lo | raw[i * words + 2] << 32
            if signed and value >= 1 << (bits - 1):
                value -= 1 << bits
            out.append((self.name_by_offset(name_off), value))
        return tuple(out)


class KernelBtf(Btf, Closing):
    """BTF loaded from the kernel by id (a loaded map's ``btf_id``); owns its memory."""

    def __init__(self, ptr: int, btf_id: int) -> None:
        super().__init__(None, ptr)
        self.btf_id = btf_id
        self._closed = False

    @classmethod
    def load(cls, btf_id: int) -> KernelBtf:
        ptr = _lib().btf__load_from_kernel_by_id(btf_id)
        return cls(_check_ptr(ptr, "btf__load_from_kernel_by_id", f"btf id {btf_id}"), btf_id)

    def _p(self) -> int:
        if self._closed:
            raise KernelError("use btf", f"btf id {self.btf_id}", _errno.EBADF, "freed")
        return self._ptr

    @property
    def where(self) -> str:
        return f"kernel BTF id {self.btf_id}"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _lib().btf__free(self._ptr)


class FileBtf(Btf, Closing):
    """BTF read from a file: an ELF object's ``.BTF`` section or a raw BTF blob
    (``btf__parse`` tells them apart); owns its memory. Needs no privileges."""

    def __init__(self, ptr: int, path: Path) -> None:
        super().__init__(None, ptr)
        self.path = path
        self._closed = False

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> FileBtf:
        p = Path(path)
        ptr = _lib().btf__parse(os.fsencode(os.fspath(p)), None)
        return cls(_check_ptr(ptr, "btf__parse", str(p), obj=True), p)

    def _p(self) -> int:
        if self._closed:
            raise BpfObjectError("use btf", str(self.path), _errno.EBADF, "freed")
        return self._ptr

    @property
    def where(self) -> str:
        return str(self.path)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _lib().btf__free(self._ptr)


# --------------------------------------------------------------------------
# Objects, maps, programs
# --------------------------------------------------------------------------


class _Member:
    """A map or program of an open :class:`BpfObject` (valid until it closes).

    libbpf names the calls of both alike (``bpf_map__fd`` / ``bpf_program__fd``),
    so the shared ones are looked up by ``_prefix``.
    """

    _kind: ClassVar[str]
    _prefix: ClassVar[str]

    def __init__(self, owner: BpfObject, ptr: int) -> None:
        self._owner = owner
        self._ptr = ptr
        raw = getattr(_lib(), f"{self._prefix}name")(ptr)
        self.name: str = raw.decode() if raw else "?"

    def _p(self, op: str) -> int:
        self._owner._require_open(f"{op} {self._kind} {self.name!r}")
        return self._ptr

    @property
    def fd(self) -> int:
        """The fd, owned by the object (only after load)."""
        op = f"{self._prefix}fd"
        rc = getattr(_lib(), op)(self._p(op))
        return _check_int(rc, op, self.name, obj=True, detail="object not loaded?")

    def pin(self, path: str | os.PathLike[str]) -> None:
        op = f"{self._prefix}pin"
        rc = getattr(_lib(), op)(self._p(op), os.fsencode(os.fspath(path)))
        _check_int(rc, op, f"{self.name} -> {os.fspath(path)}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class BpfMap(_Member):
    """A map of an open :class:`BpfObject` (valid until the object closes)."""

    _kind = "map"
    _prefix = "bpf_map__"

    @property
    def type(self) -> int:
        return int(_lib().bpf_map__type(self._p("bpf_map__type")))

    @property
    def max_entries(self) -> int:
        return int(_lib().bpf_map__max_entries(self._p("bpf_map__max_entries")))

    @property
    def key_size(self) -> int:
        return int(_lib().bpf_map__key_size(self._p("bpf_map__key_size")))

    @property
    def value_size(self) -> int:
        return int(_lib().bpf_map__value_size(self._p("bpf_map__value_size")))

    @property
    def btf_value_type_id(self) -> int:
        """The BTF type of the map's declared value (``__type(value, T)``), or 0."""
        return int(_lib().bpf_map__btf_value_type_id(self._p("bpf_map__btf_value_type_id")))

    @property
    def is_internal(self) -> bool:
        """A map libbpf made for global data (.bss, .data, .rodata, .kconfig)."""
        return bool(_lib().bpf_map__is_internal(self._p("bpf_map__is_internal")))

    def set_max_entries(self, n: int) -> None:
        """Resizes the map; only before the object is loaded (EBUSY after)."""
        rc = _lib().bpf_map__set_max_entries(self._p("bpf_map__set_max_entries"), n)
        _check_int(rc, "bpf_map__set_max_entries", self.name, obj=True)

    def set_pin_path(self, path: str | os.PathLike[str] | None) -> None:
        raw = os.fsencode(os.fspath(path)) if path is not None else None
        rc = _lib().bpf_map__set_pin_path(self._p("bpf_map__set_pin_path"), raw)
        _check_int(rc, "bpf_map__set_pin_path", self.name, obj=True)

    def lookup(self, key: bytes) -> bytes:
        self._check_key(key)
        return map_lookup(self.fd, key, self._lookup_size(), name=self.name)

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        self._check_key(key)
        if len(value) != self._lookup_size():
            raise KernelError(
                "bpf_map_update_elem",
                self.name,
                _errno.EINVAL,
                f"value is {len(value)} bytes, map wants {self._lookup_size()}",
            )
        map_update(self.fd, key, value, flags, name=self.name)

    def info(self) -> MapInfo:
        return map_info(self.fd, name=self.name)

    def _check_key(self, key: bytes) -> None:
        if len(key) != self.key_size:
            raise KernelError(
                "bpf_map_lookup_elem",
                self.name,
                _errno.EINVAL,
                f"key is {len(key)} bytes, map wants {self.key_size}",
            )

    def _lookup_size(self) -> int:
        # Per-CPU maps take a buffer for every possible CPU.
        if self.type in _PERCPU_MAP_TYPES:
            return percpu_value_stride(self.value_size) * num_possible_cpus()
        return self.value_size


# PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH, PERCPU_CGROUP_STORAGE
_PERCPU_MAP_TYPES: Final = frozenset({5, 6, 10, 21})


class BpfProgram(_Member):
    """A program of an open :class:`BpfObject` (valid until the object closes)."""

    _kind = "program"
    _prefix = "bpf_program__"

    def test_run(self, ctx: bytes | None = None) -> int:
        return prog_test_run(self.fd, ctx, name=self.name)

    @property
    def type(self) -> int:
        return int(_lib().bpf_program__type(self._p("bpf_program__type")))

    @property
    def section(self) -> str:
        raw = _lib().bpf_program__section_name(self._p("bpf_program__section_name"))
        return raw.decode("utf-8", "replace") if raw else ""

    @property
    def autoattach(self) -> bool:
        """False when the object asked libbpf not to auto-attach this program."""
        return bool(_lib().bpf_program__autoattach(self._p("bpf_program__autoattach")))

    def attach(self) -> BpfLink | None:
        """Attaches at the point its section names (libbpf auto-attach).

        None when the section has no attach point libbpf knows (``syscall``,
        a bare ``kprobe``...): libbpf answers EOPNOTSUPP, which is no error
        here. The link keeps the program attached until it is destroyed.
        """
        ptr = _lib().bpf_program__attach(self._p("bpf_program__attach"))
        if not ptr:
            err = ctypes.get_errno()
            if err == _errno.EOPNOTSUPP:
                return None
            _raise("bpf_program__attach", f"{self.name} ({self.section})", err, obj=False)
        return BpfLink(ptr, self.name)


class BpfLink:
    """An attachment of a program; :meth:`destroy` detaches it."""

    def __init__(self, ptr: int, program: str) -> None:
        self._ptr: int | None = ptr
        self.program = program

    @property
    def active(self) -> bool:
        return self._ptr is not None

    def destroy(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            _lib().bpf_link__destroy(ptr)

    def __repr__(self) -> str:
        return f"BpfLink({self.program!r}, {'attached' if self.active else 'destroyed'})"


class BpfObject(Closing):
    """An opened (and maybe loaded) BPF ELF object.

    Closing frees every map and program libbpf holds for it; their fds close
    with it, so dup (or re-open from pins) what must outlive the object.
    """

    def __init__(self, path: Path, ptr: int) -> None:
        self.path = path
        self._ptr: int | None = ptr
        self._loaded = False

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> BpfObject:
        p = Path(path)
        ptr = _lib().bpf_object__open_file(os.fsencode(os.fspath(p)), None)
        return cls(p, _check_ptr(ptr, "bpf_object__open_file", str(p), obj=True))

    def _require_open(self, what: str) -> int:
        if self._ptr is None:
            raise BpfObjectError(what, str(self.path), _errno.EBADF, "object is closed")
        return self._ptr

    @property
    def closed(self) -> bool:
        return self._ptr is None

    @property
    def loaded(self) -> bool:
        return self._loaded

    def load(self) -> None:
        ptr = self._require_open("bpf_object__load")
        rc = _lib().bpf_object__load(ptr)
        _check_int(
            rc,
            "bpf_object__load",
            str(self.path),
            obj=True,
            detail="see the ringbridge.libbpf log for libbpf's reason",
        )
        self._loaded = True

    def map(self, name: str) -> BpfMap:
        ptr = self._require_open("bpf_object__find_map_by_name")
        found = _lib().bpf_object__find_map_by_name(ptr, name.encode())
        _check_ptr(found, "bpf_object__find_map_by_name", f"{self.path}:{name}", obj=True)
        return BpfMap(self, found)

    def program(self, name: str) -> BpfProgram:
        ptr = self._require_open("bpf_object__find_program_by_name")
        found = _lib().bpf_object__find_program_by_name(ptr, name.encode())
        _check_ptr(found, "bpf_object__find_program_by_name", f"{self.path}:{name}", obj=True)
        return BpfProgram(self, found)

    def maps(self) -> Iterator[BpfMap]:
        ptr = self._require_open("bpf_object__next_map")
        cur = _lib().bpf_object__next_map(ptr, None)
        while cur:
            yield BpfMap(self, cur)
            cur = _lib().bpf_object__next_map(self._require_open("bpf_object__next_map"), cur)

    def programs(self) -> Iterator[BpfProgram]:
        ptr = self._require_open("bpf_object__next_program")
        cur = _lib().bpf_object__next_program(ptr, None)
        while cur:
            yield BpfProgram(self, cur)
            cur = _lib().bpf_object__next_program(
                self._require_open("bpf_object__next_program"), cur
            )

    def btf(self) -> Btf:
        ptr = self._require_open("bpf_object__btf")
        raw = _lib().bpf_object__btf(ptr)
        if not raw:
            raise BpfObjectError(
                "bpf_object__btf",
                str(self.path),
                _errno.ENOENT,
                "object has no BTF (build it with clang -g)",
            )
        return Btf(self, raw)

    def close(self) -> None:
        ptr, self._ptr = self._ptr, None
        if ptr is not None:
            _lib().bpf_object__close(ptr)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("loaded" if self._loaded else "open")
        return f"BpfObject({str(self.path)!r}, {state})"
