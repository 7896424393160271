"""Where the service runs, to say how to fix a start that failed *there*.

A missing bpffs or a missing capability has a different fix on a host
(``mount -t bpf``, run as root) than in a container (mount the host's bpffs
into it, add capabilities to the container). These helpers only look
(``/proc``, marker files); they change nothing.
"""

from __future__ import annotations

import errno
import os
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
