"""Attaching a user's programs where their sections say, on the real kernel.

- ``tp/`` and ``tracepoint/`` programs attach and run on their syscall
  (tests/fixtures/upstream_style, drained on getpgid and prctl);
- with tracefs missing, the attach code mounts it -- checked in a private
  mount namespace, so the host's mounts are never touched -- or, told not to,
  refuses with the documented message;
- uprobes attach where the section names a binary and a function, and a bare
  ``uprobe`` section is loaded only;
- what this kernel refuses (kprobes without CONFIG_KPROBES, fentry without
  BPF trampolines, here) fails naming the program, its section, the errno and
  a hint; on a kernel that has them, the same programs attach and fire.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ringbridge.errors import BpfObjectError, KernelError
from ringbridge.kernel import libbpf as lb
from ringbridge.kernel.attach import (
    attach_hint,
    attach_programs,
    load_hint,
    load_object_programs,
    section_kind,
)
from ringbridge.kernel.environment import tracefs_hint
from ringbridge.kernel.objplan import ProgSpec, plan_object
from ringbridge.kernel.userobj import load_object
from ringbridge.ring import UserRingBuffer
from ringbridge.schema import TypeSources, compile_header
from tests.support.upstream import (
    PROTO_HEADER,
    REPO,
    SAMPLE_OBJ,
    claim,
    compile_bpf,
    ensure_built,
    get_global,
    getpgid,
)

pytestmark = pytest.mark.kernel

PROBES = REPO / "tests" / "fixtures" / "attach" / "probes.bpf.c"


@pytest.fixture(scope="module", autouse=True)
def _built() -> None:
    ensure_built()


def _libc_path() -> str:
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1]
        if re.search(r"/libc\.so\.6$|/libc-[\d.]+\.so$", path):
            return path
    pytest.fail("libc is not mapped into this process?")


@pytest.fixture
def probes(tmp_path: Path) -> Iterator[object]:
    """Builds probes.bpf.c for one kind; yields a loader returning the open object."""
    opened: list[lb.BpfObject] = []

    def build(*defines: str) -> lb.BpfObject:
        out = compile_bpf(PROBES, tmp_path / f"probes-{len(opened)}.bpf.o", defines)
        obj = lb.BpfObject.open(out)
        opened.append(obj)
        return obj

    yield build
    for obj in opened:
        obj.close()


def _specs(obj: lb.BpfObject) -> list[ProgSpec]:
    return [ProgSpec(p.name, p.type, p.section, p.autoattach) for p in obj.programs()]


def test_section_kinds() -> None:
    assert section_kind("tp/syscalls/sys_enter_getpgid") == "tracepoint"
    assert section_kind("tracepoint/syscalls/sys_enter_prctl") == "tracepoint"
    assert section_kind("raw_tp/sys_enter") == section_kind("tp_btf/sys_enter") == "raw_tp"
    assert section_kind("kretprobe/do_nanosleep") == "kprobe"
    assert section_kind("uretprobe//bin/bash:readline") == section_kind("usdt/x") == "uprobe"
    assert section_kind("fexit/x") == section_kind("lsm/file_open") == "trampoline"
    assert section_kind("syscall") == "syscall" and section_kind("xdp") == "xdp"


def test_tp_program_attaches_and_drains_when_its_syscall_is_made(
    pin_dir: Path, tmp_path: Path
) -> None:
    plan = plan_object(SAMPLE_OBJ, ring_size=64 * 1024)
    types = tmp_path / "types.bpf.o"
    compile_header(PROTO_HEADER, types)  # what `ringbridge types` writes
    with TypeSources.open(btf_files=[types]) as sources:
        codec = sources.codec("struct sample")
    with load_object(plan, pin_dir) as loaded:
        assert loaded.attached == ["test_user_ringbuf"]
        assert plan.programs[0].section == "tp/syscalls/sys_enter_getpgid"
        claim(loaded.obj)
        with UserRingBuffer(loaded.ring_fd) as ring:
            values = [3, -40, 1 << 40, 7, 11]
            ring.commit_samples(
                [codec.encode_sample(pid=os.getpid(), seq=i, value=v, comm="ringbridge")
                 for i, v in enumerate(values)]
            )  # fmt: skip
            assert get_global(loaded.obj, "read") == 0  # nothing drains until the syscall
            getpgid()
            assert get_global(loaded.obj, "read") == len(values)
            assert get_global(loaded.obj, "value_sum", signed=True) == sum(values)
            assert get_global(loaded.obj, "drain_status", signed=True) == len(values)
            assert get_global(loaded.obj, "err") == 0
            assert ring.consumer_pos() == ring.producer_pos


def test_missing_tracefs_is_mounted_by_the_attach_code(pin_dir: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is needed to test the tracefs mount safely")
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private",
         sys.executable, "-m", "tests.support.tracefs_child", str(pin_dir)],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["found_before"] == "None"
    # Told not to mount: the documented refusal (how to provide tracefs here).
    assert "tracepoint programs need tracefs" in out["refused"]
    assert tracefs_hint() in out["refused"]  # the host's or the container's way
    assert "mount -t tracefs nodev /sys/kernel/tracing" in tracefs_hint(container=False)
    assert "-v /sys/kernel/tracing:/sys/kernel/tracing" in tracefs_hint(container=True)
    # Allowed (the service's default): mounted, attached, and the program ran.
    assert out["mounted_after"] is True
    assert out["attached"] == ["test_user_ringbuf_protocol"]
    replies = [bytes.fromhex(r) for r in out["replies"]]
    assert [int.from_bytes(r[16:24], "little", signed=True) for r in replies] == [5, 15]


def test_uprobe_attaches_where_the_section_names_a_binary(probes: object) -> None:
    obj = probes(f'BINARY="{_libc_path()}"', "KIND_UPROBE")  # type: ignore[operator]
    obj.load()
    links = attach_programs(obj, _specs(obj))
    try:
        assert [link.program for link in links] == ["on_uprobe"]  # the bare one: loaded only
        from tests.support.upstream import set_global

        set_global(obj, "pid", os.getpid())
        for _ in range(3):
            getpgid()
        assert get_global(obj, "hits") == 3
    finally:
        for link in links:
            link.destroy()


def test_uprobe_on_a_missing_binary_names_program_section_errno_and_hint(
    probes: object,
) -> None:
    obj = probes('BINARY="/nonexistent/ringbridge-test-binary"', "KIND_UPROBE")  # type: ignore[operator]
    obj.load()
    with pytest.raises(KernelError) as info:
        attach_programs(obj, _specs(obj))
    msg = info.value.message
    assert "program on_uprobe" in msg
    assert "section uprobe//nonexistent/ringbridge-test-binary:getpgid" in msg
    assert "ENOENT" in msg and "binary and function the section names" in msg
    assert "--no-attach" in msg


def test_a_missing_tracepoint_names_program_section_errno_and_hint(probes: object) -> None:
    obj = probes("KIND_MISSING_TP")  # type: ignore[operator]
    obj.load()
    with pytest.raises(KernelError) as info:
        attach_programs(obj, _specs(obj))
    msg = info.value.message
    assert "program on_missing_tp (section tracepoint/syscalls/sys_enter_no_such_syscall)" in msg
    assert "ENOENT" in msg and "no tracepoint 'syscalls/sys_enter_no_such_syscall'" in msg


def test_kprobes_attach_or_say_what_the_kernel_lacks(probes: object) -> None:
    obj = probes("KIND_KPROBE")  # type: ignore[operator]
    obj.load()
    try:
        links = attach_programs(obj, _specs(obj))
    except KernelError as exc:
        msg = exc.message
        assert "program on_kprobe (section kprobe/do_nanosleep)" in msg
        assert re.search(r"failed: E[A-Z]+ \(", msg), msg  # the errno, by name
        assert "CONFIG_KPROBES" in msg
        assert Path("/sys/bus/event_source/devices/kprobe").exists() or "lacks" in msg
        return
    try:  # a kernel with kprobes: it attached, and it fires
        assert [link.program for link in links] == ["on_kprobe"]
        from tests.support.upstream import set_global

        set_global(obj, "pid", os.getpid())
        time.sleep(0.001)
        assert get_global(obj, "hits") >= 1
    finally:
        for link in links:
            link.destroy()


def test_fentry_loads_and_attaches_or_the_load_error_names_it(probes: object) -> None:
    obj = probes("KIND_FENTRY")  # type: ignore[operator]
    try:
        load_object_programs(obj, _specs(obj))
    except BpfObjectError as exc:
        assert exc.errno != 0
        assert re.search(r"failed: E[A-Z]+ \(", exc.message), exc.message
        assert "program on_fentry (section fentry/do_nanosleep)" in exc.message
        assert "BPF trampolines" in exc.message
        assert load_hint(_specs(obj)) in exc.message  # type: ignore[operator]
        return
    links = attach_programs(obj, _specs(obj))  # a kernel with trampolines
    try:
        assert [link.program for link in links] == ["on_fentry"]
    finally:
        for link in links:
            link.destroy()


def test_hints_by_kind() -> None:
    assert "BPF trampolines" in attach_hint("fexit/x", 1)
    assert "CONFIG_UPROBES" in attach_hint("uprobe//bin/true:main", 2)
    assert "libbpf's reason" in attach_hint("xdp", 22)
    assert load_hint([ProgSpec("p", 26, "tp/syscalls/sys_enter_getpgid", True)]) is None
