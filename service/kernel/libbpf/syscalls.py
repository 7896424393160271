"""The bpf() commands on file descriptors: pins, info, ids, test runs and
map elements, usable on pins re-opened without an object."""

from __future__ import annotations

import ctypes
import errno as _errno
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from .fd import Fd, FdLike, fd_num, fd_target
from .library import check_int, lib
from .structs import MapCreateOpts, RawMapInfo, RawProgInfoHead, TestRunOpts

# enum bpf_map_type / bpf_prog_type values we check for (uapi, stable ABI).
BPF_MAP_TYPE_ARRAY: Final = 2
BPF_MAP_TYPE_PERCPU_ARRAY: Final = 6
BPF_MAP_TYPE_USER_RINGBUF: Final = 31
BPF_MAP_TYPE_RINGBUF: Final = 27
BPF_PROG_TYPE_SYSCALL: Final = 31
BPF_F_MMAPABLE: Final = 1 << 10


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
    return check_int(lib().libbpf_num_possible_cpus(), "libbpf_num_possible_cpus", "cpus")


def obj_get(path: str | os.PathLike[str]) -> Fd:
    """Opens a bpffs pin; the caller owns (and must close) the returned fd."""
    target = os.fspath(path)
    fd = check_int(lib().bpf_obj_get(os.fsencode(target)), "bpf_obj_get", target)
    return Fd(fd, target)


def obj_pin(fd: FdLike, path: str | os.PathLike[str]) -> None:
    target = os.fspath(path)
    check_int(lib().bpf_obj_pin(fd_num(fd), os.fsencode(target)), "bpf_obj_pin", target)


def _get_info(fd: FdLike, info: ctypes.Structure, op: str, name: str | None) -> None:
    size = ctypes.c_uint32(ctypes.sizeof(info))
    rc = lib().bpf_obj_get_info_by_fd(fd_num(fd), ctypes.byref(info), ctypes.byref(size))
    check_int(rc, op, fd_target(fd, name))


def map_info(fd: FdLike, *, name: str | None = None) -> MapInfo:
    info = RawMapInfo()
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
    name: bytes | None = lib().libbpf_bpf_map_type_str(map_type)
    if not name:
        return f"map type {map_type}"
    return "BPF_MAP_TYPE_" + name.decode().upper()


def prog_info(fd: FdLike, *, name: str | None = None, map_ids: bool = False) -> ProgInfo:
    """The program's info; with ``map_ids``, also the ids of the maps it uses."""
    info = RawProgInfoHead()
    _get_info(fd, info, "bpf_prog_get_info_by_fd", name)
    ids: tuple[int, ...] = ()
    if map_ids and info.nr_map_ids:
        # Second call with a buffer for the ids the first one counted.
        buf = (ctypes.c_uint32 * info.nr_map_ids)()
        again = RawProgInfoHead()
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
    cur = ctypes.c_uint32(0)
    nxt = ctypes.c_uint32(0)
    while True:
        rc = lib().bpf_prog_get_next_id(cur.value, ctypes.byref(nxt))
        if rc == -_errno.ENOENT:
            return
        check_int(rc, "bpf_prog_get_next_id", f"after id {cur.value}")
        yield nxt.value
        cur.value = nxt.value


def prog_by_id(prog_id: int) -> Fd:
    fd = lib().bpf_prog_get_fd_by_id(prog_id)
    return Fd(check_int(fd, "bpf_prog_get_fd_by_id", f"program id {prog_id}"), f"prog {prog_id}")


def prog_test_run(prog_fd: FdLike, ctx: bytes | None = None, *, name: str | None = None) -> int:
    """Runs a program once through BPF_PROG_TEST_RUN; returns its signed retval.

    The syscall itself failing raises :class:`KernelError`; a program that
    *returns* a negative errno is the caller's business (it is the value).
    """
    opts = TestRunOpts()
    opts.sz = ctypes.sizeof(opts)
    ctx_buf = None
    if ctx:
        ctx_buf = ctypes.create_string_buffer(ctx, len(ctx))
        opts.ctx_in = ctypes.cast(ctx_buf, ctypes.c_void_p)
        opts.ctx_size_in = len(ctx)
    rc = lib().bpf_prog_test_run_opts(fd_num(prog_fd), ctypes.byref(opts))
    check_int(rc, "bpf_prog_test_run_opts", fd_target(prog_fd, name))
    # retval is the program's u32 r0; our programs return int (errno < 0).
    return ctypes.c_int32(opts.retval).value


def map_lookup(fd: FdLike, key: bytes, value_size: int, *, name: str | None = None) -> bytes:
    value = ctypes.create_string_buffer(value_size)
    key_buf = ctypes.create_string_buffer(key, len(key))
    rc = lib().bpf_map_lookup_elem(fd_num(fd), key_buf, value)
    check_int(rc, "bpf_map_lookup_elem", fd_target(fd, name))
    return value.raw


def map_update(
    fd: FdLike, key: bytes, value: bytes, flags: int = 0, *, name: str | None = None
) -> None:
    key_buf = ctypes.create_string_buffer(key, len(key))
    value_buf = ctypes.create_string_buffer(value, len(value))
    rc = lib().bpf_map_update_elem(fd_num(fd), key_buf, value_buf, flags)
    check_int(rc, "bpf_map_update_elem", fd_target(fd, name))


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
    opts = MapCreateOpts()
    opts.sz = ctypes.sizeof(opts)
    opts.map_flags = map_flags
    fd = lib().bpf_map_create(
        map_type, name.encode(), key_size, value_size, max_entries, ctypes.byref(opts)
    )
    return Fd(check_int(fd, "bpf_map_create", name), name)


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
        rc = lib().bpf_map_get_next_key(fd_num(fd), cur, nxt)
        if rc == -_errno.ENOENT:
            return
        check_int(rc, "bpf_map_get_next_key", fd_target(fd, name))
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
