"""Keep the import system's directories reachable after the switch to ``--user``.

After the privilege drop the service can no longer walk paths the
unprivileged user may not walk: a checkout or a venv under a 0700 home, a
``mktemp -d`` clone, a pyenv build under ``/root``. Whatever is imported
later -- a module first needed on an error path, a library's lazy import
(anyio loads its asyncio backend on the first threaded route), a codec --
would then fail with ``PermissionError`` in the middle of serving.

So, before the drop, every directory the import system searches (``sys.path``
and the ``__path__`` of every package already imported) that the new user
could not reach is opened (``O_PATH``) and the entry re-pointed at
``/proc/self/fd/<fd>``. Path resolution through a process's own fd link
jumps straight to the directory (the kernel allows a task its own fds
whatever its dumpability), and permissions are then checked only from there
on: the directories inside a site-packages are readable by anyone. Only
entries that need it are re-pointed: where the user can reach a directory,
module paths stay as they are.

"Could reach" is read from the mode bits (owner, group, other) of each
directory down to the entry: ACLs are not consulted, so an entry reachable
only through an ACL is re-pointed too, which is harmless.
"""

from __future__ import annotations

import importlib
import os
import stat
import sys
from pathlib import Path

__all__ = ["keep_imports_reachable", "reachable_by"]

_SEARCH = 0o1
_LIST = 0o5  # read and search


def _bits(st: os.stat_result, uid: int, gid: int) -> int:
    if st.st_uid == uid:
        return (st.st_mode >> 6) & 7
    if st.st_gid == gid:
        return (st.st_mode >> 3) & 7
    return st.st_mode & 7


def reachable_by(path: str | Path, uid: int, gid: int) -> bool:
    """Whether ``uid``:``gid`` may search every directory to ``path`` and list it (mode bits).

    uid 0 without capabilities is judged like any other uid: the drop takes
    CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH away too.
    """
    # Both the path as written (a link inside a 0700 directory is walked
    # through it) and where it leads (a link to a 0700 directory).
    literal = Path(os.path.abspath(path))
    real = Path(os.path.realpath(path))
    for target in {literal, real}:
        for d in [*reversed(target.parents), target]:
            try:
                st = os.stat(d)
            except OSError:
                return True  # gone or unreadable to us too: nothing to keep
            need = _LIST if d == target else _SEARCH
            if _bits(st, uid, gid) & need != need:
                return False
    return True


class _Holder:
    def __init__(self, uid: int, gid: int) -> None:
        self.uid = uid
        self.gid = gid
        self.held: dict[str, str] = {}

    def _under_held(self, entry: str) -> str | None:
        # A package inside a held sys.path entry goes through that entry's fd:
        # one fd per root, not one per package.
        for root, alias in self.held.items():
            if entry.startswith(root + os.sep):
                return alias + entry[len(root) :]
        return None

    def alias(self, entry: object) -> object:
        if not isinstance(entry, str) or not entry or entry.startswith("/proc/self/fd/"):
            return entry
        if entry in self.held:
            return self.held[entry]
        inside = self._under_held(entry)
        if inside is not None:
            return inside
        try:
            if not stat.S_ISDIR(os.stat(entry).st_mode):
                return entry  # a zip archive or a missing entry
        except OSError:
            return entry
        if reachable_by(entry, self.uid, self.gid):
            return entry
        try:
            fd = os.open(entry, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return entry
        self.held[entry] = f"/proc/self/fd/{fd}"
        return self.held[entry]


def keep_imports_reachable(uid: int, gid: int) -> dict[str, str]:
    """Re-points the import directories ``uid``:``gid`` could not reach at held fds.

    Call as the privileged user, right before switching. Returns what was
    re-pointed (real path -> fd path); the fds stay open for the process's life.
    """
    holder = _Holder(uid, gid)
    sys.path[:] = [holder.alias(e) for e in sys.path]  # type: ignore[misc]
    for module in list(sys.modules.values()):
        path = getattr(module, "__path__", None)
        if isinstance(path, list):  # namespace packages recompute theirs
            path[:] = [holder.alias(e) for e in path]
    if holder.held:
        sys.path_importer_cache.clear()
        importlib.invalidate_caches()
    return holder.held
