"""Attach a loaded object's programs where their sections say, or say why not.

libbpf's auto-attach reads the attach point from the section name
(``tracepoint/syscalls/sys_enter_prctl``, ``uprobe//usr/bin/bash:readline``,
``kprobe/do_nanosleep``...). What each kind needs from the kernel differs,
and a refusal from the kernel is a bare errno, so every failure here names
the program, its section, the errno and what the kind needs:

- ``tracepoint/``, ``tp/``: tracefs (mounted first when missing, see
  :mod:`ringbridge.kernel.tracefs`) and the tracepoint;
- ``raw_tp/``, ``raw_tracepoint/``, ``tp_btf/``: nothing more (the fallback);
- ``kprobe/``, ``kretprobe/``, ``ksyscall/``...: CONFIG_KPROBES;
- ``uprobe/``, ``uretprobe/``, ``usdt/``: the binary and function the section
  names (a bare ``uprobe`` section has no attach point: loaded only);
- ``fentry/``, ``fexit/``, ``fmod_ret/``, ``lsm/``: BPF trampolines. A kernel
  without them refuses these programs already at load (EPERM here), so
  :func:`load_hint` names them for the load error too.

Programs without an attach point libbpf knows (``syscall``, XDP, TC, a bare
``kprobe``...) are loaded only; ``--no-attach`` loads every program only.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

from ..errors import BpfObjectError, KernelError
from . import libbpf as lb
from .objplan import ProgSpec
from .tracefs import ensure_tracefs, find_tracefs

__all__ = ["attach_hint", "attach_programs", "load_hint", "load_object_programs", "section_kind"]

log = logging.getLogger("ringbridge.kernel")

#: Attach family -> the section prefixes (libbpf's section names) that name it.
_FAMILIES: Final = {
    "tracepoint": ("tp", "tracepoint"),
    "raw_tp": ("raw_tp", "raw_tracepoint", "raw_tp.w", "raw_tracepoint.w", "tp_btf"),
    "kprobe": ("kprobe", "kretprobe", "ksyscall", "kretsyscall", "kprobe.multi", "kretprobe.multi"),
    "uprobe": (
        "uprobe", "uretprobe", "uprobe.s", "uretprobe.s", "usdt", "uprobe.multi", "uretprobe.multi",
    ),
    "trampoline": (
        "fentry", "fexit", "fmod_ret", "fentry.s", "fexit.s", "fmod_ret.s", "lsm", "lsm.s",
        "freplace", "iter", "iter.s",
    ),
}  # fmt: skip
_KINDS: Final = {prefix: family for family, prefixes in _FAMILIES.items() for prefix in prefixes}
_KPROBE_PMU: Final = Path("/sys/bus/event_source/devices/kprobe")
_TRAMPOLINE_NEEDS: Final = (
    "fentry/fexit/fmod_ret/lsm programs need BPF trampolines "
    "(CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS, and the kernel's BTF); raw_tp/tp_btf or "
    "tracepoint programs attach without them"
)


def section_kind(section: str) -> str:
    """The attach family of a section: tracepoint, raw_tp, kprobe, uprobe,
    trampoline, or its own prefix for anything else (``syscall``, ``xdp``...)."""
    prefix = section.split("/", 1)[0]
    return _KINDS.get(prefix, prefix)


def _target(section: str) -> str:
    return section.split("/", 1)[1] if "/" in section else ""


def attach_hint(section: str, err: int) -> str:
    """What the attach point of ``section`` needs, for an attach that failed with ``err``."""
    kind = section_kind(section)
    target = _target(section)
    if kind == "tracepoint":
        where = find_tracefs()
        if where is None:
            why = "tracepoints need tracefs, which is not mounted"
        elif err == errno.ENOENT:
            why = f"no tracepoint {target!r} in this kernel (see {where}/events/)"
        else:
            why = f"tracepoint {target!r} refused the program"
    elif kind == "raw_tp":
        why = (
            f"no raw tracepoint {target!r} in this kernel"
            if err == errno.ENOENT
            else "the raw tracepoint refused the program"
        )
    elif kind == "kprobe":
        if not _KPROBE_PMU.exists():
            why = (
                "kprobes need CONFIG_KPROBES, which this kernel lacks: use a tracepoint "
                "or raw_tp program"
            )
        else:
            why = f"kprobes need CONFIG_KPROBES and the function {target!r} (see /proc/kallsyms)"
    elif kind == "uprobe":
        why = (
            "uprobes need CONFIG_UPROBES and the binary and function the section names "
            "(uprobe/BINARY:FUNCTION[+OFFSET]) to exist on this host"
        )
    elif kind == "trampoline":
        why = _TRAMPOLINE_NEEDS
    else:
        why = "see the ringbridge.libbpf log for libbpf's reason"
    return f"{why}; --no-attach loads the programs without attaching them"


def _attach_one(obj: lb.BpfObject, spec: ProgSpec) -> lb.BpfLink | None:
    try:
        return obj.program(spec.name).attach()
    except KernelError as exc:
        raise KernelError(
            "attach",
            f"program {spec.name} (section {spec.section})",
            exc.errno,
            attach_hint(spec.section, exc.errno),
        ) from exc


def attach_programs(
    obj: lb.BpfObject, programs: Iterable[ProgSpec], *, mount_tracefs: bool = True
) -> list[lb.BpfLink]:
    """Attaches every auto-attachable program of the loaded ``obj``; all or none.

    ``syscall`` programs (run on demand) and programs the object marked not
    to auto-attach are skipped. tracefs is mounted first when a tracepoint
    program needs it and ``mount_tracefs`` allows.
    """
    todo = [p for p in programs if p.type != lb.BPF_PROG_TYPE_SYSCALL and p.autoattach]
    if any(section_kind(p.section) == "tracepoint" for p in todo):
        try:
            ensure_tracefs(mount=mount_tracefs)
        except KernelError as exc:
            names = ", ".join(
                f"{p.name} ({p.section})" for p in todo if section_kind(p.section) == "tracepoint"
            )
            raise KernelError(
                "attach", f"tracepoint programs {names}", exc.errno, exc.message
            ) from exc
    links: list[lb.BpfLink] = []
    try:
        for spec in todo:
            link = _attach_one(obj, spec)
            if link is None:
                log.info(
                    "program has no attach point; loaded only",
                    extra={"program": spec.name, "section": spec.section},
                )
                continue
            links.append(link)
            log.info("attached", extra={"program": spec.name, "section": spec.section})
    except BaseException:
        for link in links:
            link.destroy()
        raise
    return links


def load_hint(programs: Sequence[ProgSpec]) -> str | None:
    """For a failed load: the programs of kinds some kernels refuse at load, and why.

    None when the object has none (its load failed for another reason).
    """
    suspects = [p for p in programs if section_kind(p.section) == "trampoline"]
    if not suspects:
        return None
    names = ", ".join(f"program {p.name} (section {p.section})" for p in suspects)
    return f"{names}: {_TRAMPOLINE_NEEDS}; a kernel without them refuses such programs at load"


def load_object_programs(obj: lb.BpfObject, programs: Sequence[ProgSpec]) -> None:
    """``obj.load()``, with :func:`load_hint` added to a failure it explains."""
    try:
        obj.load()
    except BpfObjectError as exc:
        hint = load_hint(programs)
        if hint is None:
            raise
        raise BpfObjectError(
            "bpf_object__load", str(obj.path), exc.errno, f"{hint}; see the ringbridge.libbpf log"
        ) from exc
