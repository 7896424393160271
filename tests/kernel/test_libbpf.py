"""The ctypes layer over libbpf, against the real kernel and the built object."""

from __future__ import annotations

import errno
import logging
import struct
from pathlib import Path

import pytest

from ringbridge.errors import BpfObjectError, KernelError
from ringbridge.kernel import libbpf as lb

COUNTERS_SIZE = 6232  # sizeof(struct ringbridge_counters): 779 u64 words
KEY0 = b"\0\0\0\0"
OUR_MAPS = {"ringbridge_ring", "ringbridge_counters", "ringbridge_ctl", "ringbridge_timer"}
OUR_PROGS = {"ringbridge_drain", "ringbridge_arm_timer", "ringbridge_disarm_timer"}


@pytest.fixture
def loaded(bpf_object_path: Path) -> lb.BpfObject:
    obj = lb.BpfObject.open(bpf_object_path)
    obj.map("ringbridge_ring").set_max_entries(1 << 16)
    obj.load()
    return obj


# -- objects, maps, programs ------------------------------------------------


@pytest.mark.kernel
def test_open_load_close(bpf_object_path: Path) -> None:
    with lb.BpfObject.open(bpf_object_path) as obj:
        loaded_before = obj.loaded
        assert {m.name for m in obj.maps()} >= OUR_MAPS
        assert {p.name for p in obj.programs()} == OUR_PROGS
        ring = obj.map("ringbridge_ring")
        assert ring.type == lb.BPF_MAP_TYPE_USER_RINGBUF
        assert ring.max_entries == 8 * 1024 * 1024  # the object's default
        counters = obj.map("ringbridge_counters")
        assert (counters.key_size, counters.value_size) == (4, COUNTERS_SIZE)
        obj.load()
        assert (loaded_before, obj.loaded) == (False, True)
        assert ring.fd >= 0
        assert obj.program("ringbridge_drain").fd >= 0
    assert obj.closed
    obj.close()  # idempotent


@pytest.mark.kernel
def test_closed_object_refuses_use(bpf_object_path: Path) -> None:
    obj = lb.BpfObject.open(bpf_object_path)
    ring = obj.map("ringbridge_ring")
    obj.close()
    with pytest.raises(BpfObjectError) as info:
        _ = ring.max_entries
    assert info.value.errno == errno.EBADF
    with pytest.raises(BpfObjectError):
        obj.map("ringbridge_ring")


@pytest.mark.kernel
def test_set_max_entries_before_load_is_visible_in_map_info(bpf_object_path: Path) -> None:
    with lb.BpfObject.open(bpf_object_path) as obj:
        ring = obj.map("ringbridge_ring")
        ring.set_max_entries(1 << 17)
        obj.load()
        info = lb.map_info(ring.fd)
        assert info.type == lb.BPF_MAP_TYPE_USER_RINGBUF
        assert info.max_entries == 1 << 17
        assert info.name == "ringbridge_ring"
        assert info.id > 0
        # Too late once the map exists: libbpf says EBUSY.
        with pytest.raises(BpfObjectError) as exc:
            ring.set_max_entries(1 << 18)
        assert exc.value.errno == errno.EBUSY
        assert exc.value.target == "ringbridge_ring"


@pytest.mark.kernel
def test_map_lookup_update_roundtrip(loaded: lb.BpfObject) -> None:
    with loaded:
        ctl = loaded.map("ringbridge_ctl")
        value = struct.pack("=IIQQIIQ", 1, 77, 123_456, 9, 3, 0, 5_000)
        ctl.update(KEY0, value)
        assert ctl.lookup(KEY0) == value
        assert lb.map_lookup(ctl.fd, KEY0, 40) == value
        lb.map_update(ctl.fd, KEY0, bytes(40))
        assert ctl.lookup(KEY0) == bytes(40)
        with pytest.raises(KernelError) as info:
            ctl.lookup(b"\0")
        assert info.value.errno == errno.EINVAL
        # Out-of-range key of an array: the kernel's ENOENT, with the map named.
        with pytest.raises(KernelError) as info:
            lb.map_lookup(ctl.fd, struct.pack("=I", 5), 24, name="ringbridge_ctl")
        assert (info.value.op, info.value.target, info.value.errno) == (
            "bpf_map_lookup_elem",
            "ringbridge_ctl",
            errno.ENOENT,
        )


@pytest.mark.kernel
def test_lookup_percpu_returns_one_value_per_possible_cpu(loaded: lb.BpfObject) -> None:
    with loaded:
        counters = loaded.map("ringbridge_counters")
        ncpus = lb.num_possible_cpus()
        assert ncpus >= 1
        values = lb.lookup_percpu(counters.fd, KEY0, COUNTERS_SIZE)
        assert len(values) == ncpus
        assert all(len(v) == COUNTERS_SIZE for v in values)
        # The object-level lookup returns the raw per-CPU buffer.
        assert len(counters.lookup(KEY0)) == lb.percpu_value_stride(COUNTERS_SIZE) * ncpus


@pytest.mark.kernel
def test_prog_test_run_returns_signed_retval(loaded: lb.BpfObject) -> None:
    with loaded:
        drain = loaded.program("ringbridge_drain")
        assert lb.prog_test_run(drain.fd) == 0  # empty ring
        # bpf_timer_cancel on a never-initialised timer returns -EINVAL; the
        # u32 retval must come back as a negative int.
        disarm = loaded.program("ringbridge_disarm_timer")
        assert disarm.test_run() == -errno.EINVAL


@pytest.mark.kernel
def test_prog_test_run_on_a_map_fd_raises_with_target(loaded: lb.BpfObject) -> None:
    with loaded:
        ring_fd = loaded.map("ringbridge_ring").fd
        with pytest.raises(KernelError) as info:
            lb.prog_test_run(ring_fd, name="not-a-program")
        assert info.value.op == "bpf_prog_test_run_opts"
        assert info.value.target == "not-a-program"
        assert info.value.errno == errno.EINVAL


@pytest.mark.kernel
def test_find_missing_map_and_program(bpf_object_path: Path) -> None:
    with lb.BpfObject.open(bpf_object_path) as obj:
        with pytest.raises(BpfObjectError) as info:
            obj.map("no_such_map")
        assert info.value.op == "bpf_object__find_map_by_name"
        assert info.value.target == f"{bpf_object_path}:no_such_map"
        assert info.value.errno == errno.ENOENT
        assert "ENOENT" in str(info.value)
        with pytest.raises(BpfObjectError) as info:
            obj.program("no_such_prog")
        assert info.value.errno == errno.ENOENT
        assert "no_such_prog" in str(info.value)


@pytest.mark.kernel
def test_fd_of_an_unloaded_object_raises(bpf_object_path: Path) -> None:
    with lb.BpfObject.open(bpf_object_path) as obj, pytest.raises(BpfObjectError) as info:
        _ = obj.map("ringbridge_ring").fd
    assert info.value.target == "ringbridge_ring"


# -- errors and logging that need no kernel ----------------------------------


def test_open_nonexistent_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.bpf.o"
    with pytest.raises(BpfObjectError) as info:
        lb.BpfObject.open(missing)
    assert info.value.op == "bpf_object__open_file"
    assert info.value.target == str(missing)
    assert info.value.errno == errno.ENOENT
    assert "ENOENT (No such file or directory)" in str(info.value)


def test_libbpf_warnings_reach_logging(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "broken.bpf.o"
    broken.write_bytes(b"this is not an ELF file")
    with caplog.at_level(logging.WARNING, logger=lb.LOGGER_NAME), pytest.raises(BpfObjectError):
        lb.BpfObject.open(broken)
    records = [r for r in caplog.records if r.name == lb.LOGGER_NAME]
    assert records, "libbpf's warning did not reach the ringbridge.libbpf logger"
    assert any(str(broken) in r.getMessage() for r in records)
    assert all(r.levelno == logging.WARNING for r in records)
    # Formatted through vsnprintf (no printf directives left), newline stripped.
    assert all("%s" not in r.getMessage() for r in records)
    assert all(not r.getMessage().endswith("\n") for r in records)


def test_debug_messages_are_skipped_unless_enabled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=lb.LOGGER_NAME), pytest.raises(BpfObjectError):
        lb.BpfObject.open(tmp_path / "missing.o")
    assert all(r.levelno >= logging.INFO for r in caplog.records if r.name == lb.LOGGER_NAME)


def test_fd_close_is_idempotent(tmp_path: Path) -> None:
    import os

    f = lb.Fd(os.open(tmp_path, os.O_RDONLY), "tmp")
    with f:
        assert f.fd >= 0
    assert f.closed
    f.close()
    with pytest.raises(KernelError) as info:
        _ = f.fd
    assert info.value.errno == errno.EBADF
    with pytest.raises(ValueError):
        lb.Fd(-1)


# -- pins and fd-level helpers -----------------------------------------------


@pytest.mark.kernel
def test_pin_and_obj_get_reopen_same_map(loaded: lb.BpfObject, pin_dir: Path) -> None:
    pin_dir.mkdir(parents=True)
    with loaded:
        ring = loaded.map("ringbridge_ring")
        ring.pin(pin_dir / "ring")
        loaded.program("ringbridge_drain").pin(pin_dir / "drain")
        lb.obj_pin(loaded.map("ringbridge_ctl").fd, pin_dir / "ctl")
        original_id = lb.map_info(ring.fd).id
    # The object is closed: the pins alone keep the maps and program alive.
    with lb.obj_get(pin_dir / "ring") as fd:
        info = lb.map_info(fd)
        assert info.id == original_id
        assert info.max_entries == 1 << 16
    with lb.obj_get(pin_dir / "drain") as prog:
        pinfo = lb.prog_info(prog)
        assert pinfo.type == lb.BPF_PROG_TYPE_SYSCALL
        assert pinfo.name == "ringbridge_drain"[:15]  # kernel names are 15 chars
        assert lb.prog_test_run(prog) == 0
    with lb.obj_get(pin_dir / "ctl") as ctl:
        assert lb.map_info(ctl).map_flags & 0x400  # BPF_F_MMAPABLE


@pytest.mark.kernel
def test_obj_get_missing_pin(pin_dir: Path) -> None:
    with pytest.raises(KernelError) as info:
        lb.obj_get(pin_dir / "missing")
    assert info.value.op == "bpf_obj_get"
    assert info.value.target == str(pin_dir / "missing")
    assert info.value.errno == errno.ENOENT


@pytest.mark.kernel
def test_pin_twice_fails_with_eexist(loaded: lb.BpfObject, pin_dir: Path) -> None:
    pin_dir.mkdir(parents=True)
    with loaded:
        ring = loaded.map("ringbridge_ring")
        ring.pin(pin_dir / "ring")
        with pytest.raises(KernelError) as info:
            lb.obj_pin(ring.fd, pin_dir / "ring")
        assert info.value.errno == errno.EEXIST


@pytest.mark.kernel
def test_btf_access(bpf_object_path: Path) -> None:
    with lb.BpfObject.open(bpf_object_path) as obj:
        btf = obj.btf()
        tid = btf.find_by_name_kind("ringbridge_sample", lb.BTF_KIND_STRUCT)
        assert tid is not None
        t = btf.type_by_id(tid)
        assert (t.name, t.size_or_type) == ("ringbridge_sample", 16)
        assert [m.name for m in t.members] == ["kind", "flags", "value"]
        assert [m.bit_offset for m in t.members] == [0, 32, 64]
        assert btf.find_by_name_kind("no_such_struct", lb.BTF_KIND_STRUCT) is None
