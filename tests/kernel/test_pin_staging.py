"""The pin set appears whole or not at all (staging dir + rename)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ringbridge.errors import BpfObjectError
from ringbridge.kernel.bpfobj import load_default
from ringbridge.kernel.pins import RingbridgePins

pytestmark = pytest.mark.kernel


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_stale_staging_of_a_dead_loader_is_tidied(bpf_object_path: Path, pin_dir: Path) -> None:
    pin_dir.parent.mkdir(parents=True)
    stale = pin_dir.parent / f"{pin_dir.name}-staging-{_dead_pid()}"
    # What a loader killed mid-pin leaves: a partial set, beside the pin dir.
    with load_default(bpf_object_path, stale, 4096) as lr:
        assert lr.pins.dir == stale
    RingbridgePins.under(stale).drain.unlink()
    with load_default(bpf_object_path, pin_dir, 4096) as lr:
        assert not lr.reused
        assert {p.name for p in pin_dir.iterdir()} == RingbridgePins.under(pin_dir).names()
    assert not stale.exists()
    assert sorted(p.name for p in pin_dir.parent.iterdir()) == [pin_dir.name]


def test_failed_load_leaves_nothing_behind(pin_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.bpf.o"
    broken.write_bytes(b"\x7fELF not really")
    pin_dir.parent.mkdir(parents=True)
    with pytest.raises(BpfObjectError):
        load_default(broken, pin_dir, 4096)
    assert list(pin_dir.parent.iterdir()) == []


def test_empty_existing_pin_dir_is_filled(bpf_object_path: Path, pin_dir: Path) -> None:
    pin_dir.mkdir(parents=True)
    with load_default(bpf_object_path, pin_dir, 4096) as lr:
        assert not lr.reused
        assert lr.drain() == 0
    assert {p.name for p in pin_dir.iterdir()} == RingbridgePins.under(pin_dir).names()
