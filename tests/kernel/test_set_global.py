"""``--set-global NAME=VALUE``: a user object's globals written after the load, before the attach.

What a loader does with ``skel->bss->pid = getpid()`` (the upstream
selftests' pid filter) or ``skel->data->...``: checked against the object's
BTF before anything is loaded, written into the section's map once loaded,
re-written over a re-used pin set (the other variables keep their state).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ringbridge.errors import ConfigError
from ringbridge.kernel.objplan import plan_object
from ringbridge.kernel.userobj import load_object
from tests.support.byo import read_globals
from tests.support.upstream import compile_bpf

SOURCE = r"""
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
char _license[] SEC("license") = "GPL";
enum color { RED, GREEN = 7 };
const volatile int ro_cfg = 1;
int data_val = 5;
__u8 small;
__s16 neg;
enum color col;
struct { int a; } blob;
struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, 4096);
} ring SEC(".maps");
SEC("syscall") int prog(void *ctx) { return ro_cfg + data_val + small + neg + col + blob.a; }
"""


@pytest.fixture(scope="module")
def obj(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("globals")
    (d / "globals.bpf.c").write_text(SOURCE)
    return compile_bpf(d / "globals.bpf.c", d / "globals.bpf.o")


def test_the_values_are_planned_against_the_objects_btf(obj: Path) -> None:
    plan = plan_object(
        obj, ring_size=4096, set_globals={"small": 255, "neg": -32768, "col": 7, "data_val": 9}
    )
    by_name = {g.name: g for g in plan.globals}
    assert by_name["small"].data == b"\xff" and by_name["small"].map_name.endswith(".bss")
    assert by_name["neg"].data == (-32768).to_bytes(2, "little", signed=True)
    assert by_name["col"].data == (7).to_bytes(4, "little")
    assert by_name["data_val"].map_name.endswith(".data")
    assert len({(g.map_name, g.offset) for g in plan.globals}) == 4


@pytest.mark.parametrize(
    ("values", "why"),
    [
        ({"nope": 1}, "has no global 'nope' (globals: blob, col, data_val, neg, ro_cfg, small)"),
        ({"ro_cfg": 2}, "const volatile (.rodata) global, fixed when the object loads"),
        ({"small": 256}, "--set-global small=256: global 'small' holds 0..255"),
        ({"neg": 32768}, "global 'neg' holds -32768..32767"),
        ({"small": -1}, "holds 0..255"),
        ({"blob": 1}, "global 'blob' is not an integer or an enum"),
    ],
)
def test_what_cannot_be_set_is_refused_before_the_load(
    obj: Path, values: dict[str, int], why: str
) -> None:
    with pytest.raises(ConfigError) as info:
        plan_object(obj, ring_size=4096, set_globals=values)
    assert why in info.value.message
    assert info.value.message.startswith(f"--set-global {next(iter(values))}=")


@pytest.mark.kernel
def test_written_after_the_load_and_again_over_reused_pins(obj: Path, pin_dir: Path) -> None:
    first = plan_object(obj, ring_size=4096, set_globals={"small": 7, "data_val": 42, "col": 7})
    with load_object(first, pin_dir, attach=False):
        got = read_globals(obj, pin_dir)
    assert (got["small"], got["data_val"], got["col"], got["neg"]) == (7, 42, 7, 0)
    assert got["ro_cfg"] == 1
    # A restart re-uses the pinned maps: the new value is written, the rest kept.
    second = plan_object(obj, ring_size=4096, set_globals={"small": 9, "neg": -2})
    with load_object(second, pin_dir, attach=False) as loaded:
        assert loaded.reused
        got = read_globals(obj, pin_dir)
    assert (got["small"], got["data_val"], got["col"]) == (9, 42, 7)
    assert got["neg"] == -2
