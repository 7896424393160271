"""libbpf itself: loaded once with its prototypes, its log routed to logging,
and the one point where its error conventions become our errors.

libbpf 1.x is always in "strict" mode: functions returning a pointer return
NULL and set ``errno``; functions returning ``int`` return ``-errno`` (and set
``errno`` too). ``use_errno=True`` makes ctypes keep a private copy of errno
around each call, which is what :func:`ctypes.get_errno` reads back. Every
failing call goes through :func:`check_int` / :func:`check_ptr` (or
:func:`raise_error` where a call's failure needs a look first), so messages
always carry the operation, the target and the errno.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import logging
import threading
from typing import Final, NoReturn

from ...errors import BpfObjectError, KernelError
from ..libc import libc as shared_libc
from .structs import MapCreateOpts, RawBtfType, TestRunOpts

__all__ = ["LOGGER_NAME", "check_int", "check_ptr", "lib", "raise_error"]

LOGGER_NAME: Final = "ringbridge.libbpf"
_log = logging.getLogger(LOGGER_NAME)

_LIBBPF_WARN: Final = 0
_LIBBPF_INFO: Final = 1
_PRINT_LEVELS: Final = {_LIBBPF_WARN: logging.WARNING, _LIBBPF_INFO: logging.INFO}
# Verifier logs arrive as one message; large enough to keep them whole.
_PRINT_BUF_SIZE: Final = 64 * 1024


# int (*)(enum libbpf_print_level, const char *fmt, va_list ap).
# va_list is passed as a pointer on both ABIs we run on: on x86-64 it is an
# array type (decays to a pointer); on arm64 it is a 32-byte struct, which
# AAPCS64 passes by reference to a copy. Either way we only forward the
# pointer to vsnprintf, which takes it the same way.
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)


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
    "bpf_map_create": (_I, [_I, _S, _U32, _U32, _U32, ctypes.POINTER(MapCreateOpts)]),
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
    "bpf_prog_test_run_opts": (_I, [_I, ctypes.POINTER(TestRunOpts)]),
    "bpf_obj_get_info_by_fd": (_I, [_I, _P, ctypes.POINTER(_U32)]),
    "libbpf_num_possible_cpus": (_I, []),
    "libbpf_bpf_map_type_str": (_S, [_I]),
    "libbpf_set_print": (_P, [_PRINT_FN]),
    "btf__find_by_name_kind": (ctypes.c_int32, [_P, _S, _U32]),
    "btf__type_by_id": (ctypes.POINTER(RawBtfType), [_P, _U32]),
    "btf__name_by_offset": (_S, [_P, _U32]),
    "btf__resolve_type": (_I, [_P, _U32]),
}

_lock = threading.Lock()
_lib_handle: ctypes.CDLL | None = None
_libc_handle: ctypes.CDLL | None = None
# The installed print callback; a module global so it outlives every call
# (a collected CFUNCTYPE object would leave libbpf calling freed memory).
_print_callback: object = None


def lib() -> ctypes.CDLL:
    """Loads libbpf once, declares prototypes, and routes its log to logging."""
    global _lib_handle
    if _lib_handle is not None:
        return _lib_handle
    with _lock:
        if _lib_handle is None:
            try:
                handle = ctypes.CDLL("libbpf.so.1", use_errno=True)
            except OSError as exc:
                raise KernelError(
                    "dlopen", "libbpf.so.1", _errno.ENOENT, f"{exc}; install libbpf1 (>= 1.1)"
                ) from exc
            for name, (restype, argtypes) in _PROTOTYPES.items():
                try:
                    fn = getattr(handle, name)
                except AttributeError as exc:
                    raise KernelError(
                        "dlsym", name, _errno.ENOSYS, "libbpf.so.1 is too old (need >= 1.1)"
                    ) from exc
                fn.restype = restype
                fn.argtypes = argtypes
            _install_print(handle)
            _lib_handle = handle
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


def _install_print(handle: ctypes.CDLL) -> None:
    global _print_callback
    callback = _PRINT_FN(_on_libbpf_print)
    handle.libbpf_set_print(callback)
    _print_callback = callback


# --------------------------------------------------------------------------
# The one translation point from libbpf's error conventions to our errors
# --------------------------------------------------------------------------


def raise_error(op: str, target: str, err: int, *, obj: bool, detail: str = "") -> NoReturn:
    cls = BpfObjectError if obj else KernelError
    raise cls(op, target, err or _errno.EIO, detail)


def check_int(rc: int, op: str, target: str, *, obj: bool = False, detail: str = "") -> int:
    """Returns ``rc`` if non-negative, else raises with errno ``-rc``."""
    if rc < 0:
        # libbpf returns -errno; fall back to errno for the rare raw syscall
        # wrapper that returns -1.
        err = -rc if rc != -1 else (ctypes.get_errno() or 1)
        raise_error(op, target, err, obj=obj, detail=detail)
    return rc


def check_ptr(ptr: int | None, op: str, target: str, *, obj: bool = False) -> int:
    """Returns the pointer if non-NULL, else raises with the thread's errno."""
    if not ptr:
        raise_error(op, target, ctypes.get_errno(), obj=obj)
    assert ptr is not None
    return ptr
