"""The pins module on its own: staging, unpin of a user object's set, ringbridge's state
records as optional entries (real bpffs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringbridge.errors import PinError
from ringbridge.kernel import libbpf as lb
from ringbridge.kernel.bpfobj import load_default
from ringbridge.kernel.pins import (
    CURSOR_PIN,
    META_PIN,
    PinMeta,
    legacy_lock_path,
    staged,
    unpin,
)

pytestmark = pytest.mark.kernel


def _pin_map(path: Path, name: str = "m") -> None:
    with lb.map_create(lb.BPF_MAP_TYPE_ARRAY, name, 4, 8, 1) as fd:
        lb.obj_pin(fd, path)


def test_a_staged_set_appears_whole_on_success(pin_dir: Path) -> None:
    with staged(pin_dir) as staging:
        assert staging.parent == pin_dir.parent and staging != pin_dir
        _pin_map(staging / "a")
        _pin_map(staging / "b")
        assert not pin_dir.exists()
    assert sorted(p.name for p in pin_dir.iterdir()) == ["a", "b"]
    assert [p.name for p in pin_dir.parent.iterdir()] == [pin_dir.name]


def test_a_failed_staging_leaves_nothing(pin_dir: Path) -> None:
    with pytest.raises(RuntimeError, match="load failed"), staged(pin_dir) as staging:
        _pin_map(staging / "a")
        raise RuntimeError("load failed")
    assert list(pin_dir.parent.iterdir()) == []


def test_staging_never_replaces_a_set_that_appeared_meanwhile(pin_dir: Path) -> None:
    with pytest.raises(PinError, match="appeared while loading"), staged(pin_dir) as staging:
        _pin_map(staging / "ours")
        pin_dir.mkdir()
        _pin_map(pin_dir / "theirs")
    assert [p.name for p in pin_dir.iterdir()] == ["theirs"]
    assert [p.name for p in pin_dir.parent.iterdir()] == [pin_dir.name]


def test_unpin_removes_a_user_objects_whole_set_and_its_lock(pin_dir: Path) -> None:
    with staged(pin_dir) as staging:
        _pin_map(staging / "counts")
        _pin_map(staging / "obj_bss")
        PinMeta.create(b"\0" * 32, staging / META_PIN).close()
    # What older versions left next to every pin dir (migration: unpin removes it).
    legacy_lock_path(pin_dir).mkdir(mode=0o700)
    assert legacy_lock_path(pin_dir).is_dir()
    removed = unpin(pin_dir)
    assert {p.name for p in removed} == {"counts", "obj_bss", META_PIN, pin_dir.name}
    assert removed[-2].name == META_PIN  # the identity record last, then the dir
    assert not pin_dir.exists()
    assert not legacy_lock_path(pin_dir).exists()
    assert unpin(pin_dir) == []


def test_state_records_alone_are_refused_as_a_pin_set_and_removed_by_unpin(
    pin_dir: Path, bpf_object_path: Path
) -> None:
    # What a --ring-pin service leaves in its --pin-dir: the fleet cursor and
    # nothing else. No pin set may inherit it, silently.
    pin_dir.mkdir(parents=True)
    _pin_map(pin_dir / CURSOR_PIN, "rb_fleet_cursor")
    with pytest.raises(PinError, match="only ringbridge's state records"):
        load_default(bpf_object_path, pin_dir, 64 * 1024)
    assert [p.name for p in pin_dir.iterdir()] == [CURSOR_PIN]
    assert {p.name for p in unpin(pin_dir)} == {CURSOR_PIN, pin_dir.name}


def test_a_built_in_set_with_a_stranger_beside_the_state_records_is_still_refused(
    pin_dir: Path, bpf_object_path: Path
) -> None:
    load_default(bpf_object_path, pin_dir, 64 * 1024).close()
    _pin_map(pin_dir / CURSOR_PIN, "rb_fleet_cursor")
    load_default(bpf_object_path, pin_dir, 64 * 1024).close()  # optional entry: complete
    _pin_map(pin_dir / "stranger")
    with pytest.raises(PinError, match=r"not ringbridge's \(stranger\)"):
        load_default(bpf_object_path, pin_dir, 64 * 1024)
    assert CURSOR_PIN in {p.name for p in unpin(pin_dir)}
    assert [p.name for p in pin_dir.iterdir()] == ["stranger"]
