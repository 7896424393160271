"""Give up privilege once the kernel objects are open: capabilities, then root.

Loading and pinning a BPF object needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN);
using it afterwards does not: since Linux 5.19 the fds are the capability --
map lookups, BPF_PROG_TEST_RUN of the drain and timer programs, and the ring's
mmap all work for a process holding them, even with
``kernel.unprivileged_bpf_disabled=2`` (measured on 6.18), and whatever its
uid. So a service that has loaded, mapped and locked its ring gives up all
privilege: a compromise of the HTTP side can then no longer load BPF
programs, touch other pins, or act as root on the files of the host.

Capabilities are per *thread* in Linux (``capset`` acts on the caller), so the
drop is only meaningful while the process has one thread; it refuses
otherwise rather than leave a privileged thread behind.

The order matters. Dropping from the bounding set needs CAP_SETPCAP and
changing uid needs CAP_SETUID/CAP_SETGID, so both come before the final
``capset``; ``setresuid`` from root to a non-zero uid (without
SECBIT_KEEP_CAPS) clears the permitted and effective sets by itself, and the
``capset`` that follows makes sure every set is empty either way.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import grp
import logging
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, KernelError
from .libc import libc
from .reachable import keep_imports_reachable

log = logging.getLogger("ringbridge.privileges")

_PR_CAPBSET_DROP = 24
_PR_SET_NO_NEW_PRIVS = 38
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_libc = libc()
_libc.prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
_libc.prctl.restype = ctypes.c_int
_libc.capset.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
_libc.capset.restype = ctypes.c_int


@dataclass(frozen=True)
class Credentials:
    """The unprivileged identity to switch to: uid, gid, and the user's name if known."""

    uid: int
    gid: int
    name: str | None = None


def resolve_user(spec: str) -> Credentials:
    """``name``, ``uid`` or ``uid:gid`` (or ``name:group``) -> :class:`Credentials`.

    A name is looked up in the passwd database and takes the user's primary
    group; a bare uid unknown to the database takes gid = uid (what container
    runtimes do for ``--user 10001``). Root is refused: switching to it would
    be no drop at all.
    """
    user, sep, group = spec.strip().partition(":")
    if not user or (sep and not group):
        raise ConfigError(f"user {spec!r}: expected a name, a uid or uid:gid")
    entry: pwd.struct_passwd | None
    if user.isdigit():
        uid = int(user)
        try:
            entry = pwd.getpwuid(uid)
        except KeyError:
            entry = None
    else:
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            raise ConfigError(f"user {spec!r}: no user named {user!r} on this system") from None
        uid = entry.pw_uid
    if group:
        if group.isdigit():
            gid = int(group)
        else:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ConfigError(
                    f"user {spec!r}: no group named {group!r} on this system"
                ) from None
    else:
        gid = entry.pw_gid if entry is not None else uid
    if uid == 0 or gid == 0:
        raise ConfigError(f"user {spec!r}: is root (uid or gid 0); name an unprivileged user")
    return Credentials(uid, gid, entry.pw_name if entry is not None else None)


def _prctl(option: int, arg: int, what: str) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        raise KernelError("prctl", what, ctypes.get_errno())


def capability_sets(status: Path = Path("/proc/self/status")) -> dict[str, int]:
    """CapInh/CapPrm/CapEff/CapBnd/CapAmb and NoNewPrivs of a process, as ints."""
    out: dict[str, int] = {}
    for line in status.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.startswith("Cap"):
            out[key] = int(value.strip(), 16)
        elif key == "NoNewPrivs":
            out[key] = int(value.strip())
    return out


def _switch_user(to: Credentials) -> None:
    """Every uid and gid of the process to ``to``, supplementary groups cleared."""
    try:
        # glibc applies set*id to every thread of the process (unlike capset).
        os.setgroups([])
        os.setresgid(to.gid, to.gid, to.gid)
        os.setresuid(to.uid, to.uid, to.uid)
    except OSError as exc:
        raise KernelError(
            "setresuid",
            f"uid {to.uid} gid {to.gid}",
            exc.errno or 0,
            "switching user needs CAP_SETUID and CAP_SETGID at start-up",
        ) from exc
    if os.getresuid() != (to.uid,) * 3 or os.getresgid() != (to.gid,) * 3:
        raise KernelError(
            "setresuid",
            f"uid {to.uid} gid {to.gid}",
            0,
            f"still uids {os.getresuid()} gids {os.getresgid()}",
        )


def drop_all_capabilities(user: Credentials | None = None) -> None:
    """Empty every capability set of this (single-threaded) process, for good.

    With ``user``, also switch every uid and gid to it (and clear the
    supplementary groups), so the process ends neither privileged nor root.
    """
    threads = len(os.listdir("/proc/self/task"))
    if threads != 1:
        raise ConfigError(
            f"cannot drop privileges: the process has {threads} threads and capabilities "
            "are per thread; drop them before any thread starts"
        )
    # Modules imported from now on must still be found: a checkout or venv
    # the new user cannot walk to stays reachable through held fds.
    target = (user.uid, user.gid) if user is not None else (os.getuid(), os.getgid())
    held = keep_imports_reachable(*target)
    if held:
        log.info(
            "import directories the service user cannot reach are held open",
            extra={"directories": len(held), "uid": target[0]},
        )
    # No execve may ever give them back (setuid binaries, file capabilities).
    _prctl(_PR_SET_NO_NEW_PRIVS, 1, "PR_SET_NO_NEW_PRIVS")
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, "PR_CAP_AMBIENT_CLEAR_ALL")
    last = int(Path("/proc/sys/kernel/cap_last_cap").read_text())
    # The bounding set first: dropping from it needs CAP_SETPCAP, which the
    # user switch and the capset below take away. Without CAP_SETPCAP (a
    # least-privilege container) it stays: with no_new_privs set, nothing
    # can use it.
    for cap in range(last + 1):
        if _libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            err = ctypes.get_errno()
            if err == errno.EPERM:
                break
            raise KernelError("prctl", f"PR_CAPBSET_DROP({cap})", err)
    if user is not None:
        _switch_user(user)
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()  # v3 takes two 32-bit halves, all zero
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise KernelError("capset", "all capability sets", ctypes.get_errno())
    left = capability_sets()
    if left.get("CapEff") or left.get("CapPrm") or left.get("CapInh") or left.get("CapAmb"):
        raise KernelError("capset", "all capability sets", 0, f"still held: {left}")
