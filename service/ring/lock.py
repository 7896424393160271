"""One producer per ring: the producer lock, keyed by the ring itself.

A user ring buffer takes exactly one producer: two processes advancing
``producer_pos`` overwrite each other's records and can poison the ring. Every
ringbridge producer -- the service, whatever its backend, and any user of
:class:`ringbridge.ring.UserRingBuffer` -- takes this lock before it maps,
recovers or writes the ring, and holds it until it closes.

- **Key: the map's id** (``bpf_obj_get_info_by_fd``). An id names one map
  for as long as it exists, however it was reached -- its pin, a second pin
  of it, the loaded object, an fd passed over a socket -- so every path to one
  ring meets on one lock. The holder keeps the ring's fd open for as long as
  it holds the lock, so the map, and its id, outlive the lock. Ids are per
  boot, like ``/run``.
- **Where:** ``/run/ringbridge/map-<id>.lock`` (:data:`DEFAULT_LOCK_DIR`): a
  runtime directory (tmpfs, empty after a reboot), made ``0700``, that only
  its owner (root) can enter -- so another local user can neither take a
  lock nor keep a producer from taking one. A directory there that belongs to
  someone else, or is a symlink, is refused (nothing of it is trusted or
  removed); one of ours that others could enter is made ``0700``. A lock file
  that is not a regular ``0600`` file of ours is replaced: whoever holds the
  old inode holds nothing that matters.
- **How:** ``flock(LOCK_EX | LOCK_NB)`` on the file. The kernel drops it when
  the holder exits, even on a crash. The holder writes its pid into the file,
  so that a refused producer can name it. On close the holder unlinks the
  file, then unlocks; a starter whose lock is on an inode no longer at the
  path (it raced with that unlink) tries again.
- **Privilege drop:** taken (as root) before the service drops its
  privileges, held by fd afterwards. The unprivileged process then cannot
  unlink the file: it stays, empty of any holder, and the next start reuses it.
- **Containers:** ``/run`` is the container's own. Producers in several
  containers feeding one host ring share the lock only if they share the
  host's ``/run/ringbridge`` (a volume); without it the foreign-writer check
  of :class:`~ringbridge.ring.UserRingBuffer` still stops them.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from pathlib import Path

from ..closing import Closing
from ..errors import PinError, ProducerLockedError

__all__ = ["DEFAULT_LOCK_DIR", "ProducerLock", "lock_path"]

#: Where the producer locks live unless told otherwise.
DEFAULT_LOCK_DIR = Path("/run/ringbridge")

_ATTEMPTS = 5


def lock_path(map_id: int, lock_dir: str | os.PathLike[str] | None = None) -> Path:
    """The lock file of the ring with map id ``map_id``."""
    return Path(lock_dir if lock_dir is not None else DEFAULT_LOCK_DIR) / f"map-{map_id}.lock"


class ProducerLock(Closing):
    """The held lock of one ring; :meth:`close` (idempotent) releases it."""

    def __init__(self, fd: int, path: Path, map_id: int) -> None:
        self._fd = fd
        self.path = path
        self.map_id = map_id

    @classmethod
    def acquire(
        cls, map_id: int, *, what: str, lock_dir: str | os.PathLike[str] | None = None
    ) -> ProducerLock:
        """Takes the lock of the ring with map id ``map_id``, without waiting.

        ``what`` names the ring in errors. Raises :class:`ProducerLockedError`
        (naming the holder's pid when it is known) when another producer holds
        it, :class:`PinError` when the lock directory cannot be used.
        """
        path = lock_path(map_id, lock_dir)
        dir_fd = _private_dir(path.parent)
        try:
            for _ in range(_ATTEMPTS):
                fd = _lock_file(dir_fd, path)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = _holder(fd)
                    os.close(fd)
                    raise ProducerLockedError(
                        f"{what}: another ringbridge producer holds this ring ({holder}, "
                        f"lock {path}); a user ring buffer takes one producer only: stop "
                        "that producer first, or feed another ring"
                    ) from None
                except OSError as exc:
                    os.close(fd)
                    raise PinError(f"cannot lock {path}: {exc.strerror}") from exc
                if _still_at(dir_fd, path.name, fd):
                    _write_pid(fd)
                    return cls(fd, path, map_id)
                os.close(fd)  # its holder unlinked it meanwhile: it guards nothing
        finally:
            os.close(dir_fd)
        raise PinError(f"producer lock {path} keeps being replaced by someone else")

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        # Unlinked before unlocked: nobody can take a lock on this inode after
        # it left the path (they would see it gone and retry). An unprivileged
        # holder (after a privilege drop) cannot unlink: the file stays.
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                os.unlink(self.path)
        os.close(fd)

    def __repr__(self) -> str:
        return f"ProducerLock({str(self.path)!r}{', released' if self.closed else ''})"


def _private_dir(path: Path) -> int:
    """An fd of the lock directory, created ``0700``; one not ours alone is refused."""
    euid = os.geteuid()
    try:
        os.mkdir(path, 0o700)  # umask can only take bits away
    except FileExistsError:
        pass
    except OSError as exc:
        if euid != 0 and exc.errno in (errno.EACCES, errno.EPERM):
            hint = "; it is root's: run as root, or pass a lock directory of your own"
        elif exc.errno == errno.EROFS:
            hint = (
                "; in a container with a read-only root, mount the host's /run/ringbridge "
                "there (a hostPath volume in Kubernetes, -v /run/ringbridge:/run/ringbridge)"
            )
        else:
            hint = ""
        raise PinError(
            f"cannot create the producer lock directory {path}: {exc.strerror}{hint}"
        ) from exc
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise PinError(
            f"producer lock directory {path} cannot be used: {exc.strerror} "
            "(a symlink or not a directory? remove it)"
        ) from exc
    st = os.fstat(fd)
    if st.st_uid != euid:
        os.close(fd)
        raise PinError(
            f"producer lock directory {path} belongs to uid {st.st_uid}, not to this "
            f"process (uid {euid}): whoever owns it could take or block the lock; "
            f"remove it (rm -r {path}) or use another lock directory"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        # Ours, but others could enter: nobody else needs to.
        os.fchmod(fd, 0o700)
    return fd


def _lock_file(dir_fd: int, path: Path) -> int:
    """An fd of the lock file: a regular 0600 file of ours, created if missing."""
    euid = os.geteuid()
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    for _ in range(_ATTEMPTS):
        try:
            fd = os.open(path.name, flags, 0o600, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno != errno.ELOOP:  # a symlink: replaced below
                raise PinError(f"cannot open producer lock {path}: {exc.strerror}") from exc
        else:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_uid == euid and not st.st_mode & 0o077:
                return fd
            os.close(fd)
        # Not ours alone (made by hand, by another user while the directory
        # was open, a symlink or a fifo): replace it.
        try:
            os.unlink(path.name, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise PinError(f"cannot replace producer lock {path}: {exc.strerror}") from exc
    raise PinError(f"producer lock {path} keeps being replaced by someone else")


def _still_at(dir_fd: int, name: str, fd: int) -> bool:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _write_pid(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _holder(fd: int) -> str:
    """The holder, as the refusal names it: its pid and command line when known."""
    try:
        pid = int(os.pread(fd, 32, 0).decode().strip())
    except (OSError, ValueError, UnicodeDecodeError):
        return "holder pid unknown"
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"pid {pid}"
    cmd = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return f"pid {pid}: {cmd[:200]}" if cmd else f"pid {pid}"
