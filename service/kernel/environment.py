"""Where the service runs, to say how to fix a start that failed *there*.

A missing bpffs or a missing capability has a different fix on a host
(``mount -t bpf``, run as root) than in a container (mount the host's bpffs
into it, add capabilities to the container). These helpers only look
(``/proc``, marker files, the mount table); they change nothing.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

from ..errors import KernelError, RingbridgeError

#: Capabilities loading needs, by bit number (linux/capability.h): CAP_BPF for
#: bpf() and CAP_PERFMON for what the programs read (pointer arithmetic,
#: bpf_timer). The kernel accepts CAP_SYS_ADMIN in place of both
#: (bpf_capable(), perfmon_capable()): the one choice on engines that do not
#: know CAP_BPF (Docker 20.10). Pinning needs no capability, only bpffs access.
NEEDED_CAPS = {"CAP_BPF": 39, "CAP_PERFMON": 38}
CAP_SYS_ADMIN = 21


def in_container(root: Path = Path("/")) -> bool:
    """Best effort: Docker/Podman marker files, or a Kubernetes pod's environment."""
    if (root / ".dockerenv").exists() or (root / "run/.containerenv").exists():
        return True
    if "KUBERNETES_SERVICE_HOST" in os.environ:
        return True
    try:
        cgroup = (root / "proc/1/cgroup").read_text()
    except OSError:
        return False
    return any(word in cgroup for word in ("docker", "kubepods", "containerd", "libpod"))


def missing_capabilities(status: Path = Path("/proc/self/status")) -> list[str]:
    """Names of :data:`NEEDED_CAPS` not in this process's effective set."""
    try:
        for line in status.read_text().splitlines():
            if line.startswith("CapEff:"):
                eff = int(line.split(":", 1)[1].strip(), 16)
                if eff >> CAP_SYS_ADMIN & 1:
                    return []
                return [name for name, bit in NEEDED_CAPS.items() if not eff >> bit & 1]
    except (OSError, ValueError):
        pass
    return []


def bpffs_hint(container: bool | None = None) -> str:
    """How to get a bpffs to pin on, here."""
    if container if container is not None else in_container():
        return (
            "inside a container, mount the host's bpffs into it: "
            "`docker run -v /sys/fs/bpf:/sys/fs/bpf ...` (Kubernetes: a hostPath volume "
            "for /sys/fs/bpf), and use a pin dir below it"
        )
    return "mount one (`mount -t bpf bpf /sys/fs/bpf`) and use a directory below it"


def tracefs_hint(container: bool | None = None) -> str:
    """How to give tracepoint programs the tracefs they attach through, here."""
    if container if container is not None else in_container():
        return (
            "tracepoint programs need tracefs: mount the host's into the container "
            "(`docker run -v /sys/kernel/tracing:/sys/kernel/tracing ...`; Kubernetes: a "
            "hostPath volume), or give it CAP_SYS_ADMIN so the service can mount it; "
            "raw_tp programs need none"
        )
    return (
        "tracepoint programs need tracefs: the service mounts it when it runs as root; "
        "else mount it (`mount -t tracefs nodev /sys/kernel/tracing`); "
        "raw_tp programs need none"
    )


def capabilities_hint(missing: list[str], container: bool | None = None) -> str:
    """How to give the service the capabilities it lacks, here."""
    names = ", ".join(missing) if missing else ", ".join(NEEDED_CAPS)
    what = f"missing capabilities: {names}" if missing else f"it needs {names}"
    if container if container is not None else in_container():
        flags = " ".join(f"--cap-add {n.removeprefix('CAP_')}" for n in NEEDED_CAPS)
        how = (
            f"run the container with `{flags} --security-opt seccomp=unconfined`; "
            "an engine that refuses those (Docker 20.10: unknown capability) needs "
            "`--cap-add SYS_ADMIN` instead; or --privileged"
        )
    else:
        how = (
            "run as root, or grant them (`setcap` on the interpreter, systemd "
            "AmbientCapabilities=); CAP_SYS_ADMIN also stands in for both"
        )
    return f"{what} to load and pin BPF objects; {how}"


def startup_hint(exc: RingbridgeError) -> str | None:
    """What to do about a failed start, or None when the error already says it."""
    if isinstance(exc, KernelError) and exc.errno in (errno.EPERM, errno.EACCES):
        return capabilities_hint(missing_capabilities())
    return None


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def fs_type(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> str | None:
    """The type of the file system ``path`` (absolute, maybe missing) would be on.

    Read from the mount table, not by a ``stat``: on bpffs a ``stat`` of a
    name with a dot fails (EPERM) instead of answering.
    """
    try:
        lines = mountinfo.read_text().splitlines()
    except OSError:
        return None
    best, kind = -1, None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right:
            continue
        point = Path(_unescape(fields[4]))
        # The deepest mount point containing path; of two on one point, the later.
        if (path == point or point in path.parents) and len(point.parts) >= best:
            best, kind = len(point.parts), right.split()[0]
    return kind


def bpffs_name_problem(path: Path) -> str | None:
    """Why bpffs would refuse ``path``, or None.

    bpffs keeps names with a dot for itself (``bpf_lookup`` answers EPERM for
    any of them, even to look one up), so no pin and no directory on it can
    have one.
    """
    full = Path(os.path.abspath(path))
    parent = Path(full.anchor)
    for part in full.parts[1:]:
        if "." in part and fs_type(parent) == "bpf":
            return (
                f"{path}: {part!r} has a '.', which bpffs refuses in every name "
                "(EPERM): choose a name without one"
            )
        parent = parent / part
    return None
