"""The default object's structs, read through the schema model.

bpfobj decodes the ctl and counters maps with fixed layouts; these tests keep
those layouts honest against the BTF of the object that is built.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ringbridge.kernel import bpfobj, counters
from ringbridge.kernel import libbpf as lb
from ringbridge.schema import model
from ringbridge.schema.btf import find_type


def layout(obj_path: Path, name: str) -> tuple[int, list[tuple[str, int, int, int]]]:
    """(size, [(member, byte offset, byte size, element count)])."""
    with lb.BpfObject.open(obj_path) as obj:
        t = find_type(obj.btf(), name)
    assert isinstance(t, model.Composite)
    rows = []
    for m in t.members:
        count = m.type.count if isinstance(m.type, model.Array) else 1
        rows.append((m.name, m.bit_offset // 8, m.type.size, count))
    return t.size, rows


@pytest.mark.kernel
def test_ringbridge_ctl(bpf_object_path: Path) -> None:
    size, rows = layout(bpf_object_path, "ringbridge_ctl")
    assert size == bpfobj.CTL_VALUE_SIZE
    assert rows == [
        ("producer_waiting", 0, 4, 1),
        ("drain_budget", 4, 4, 1),
        ("period_ns", 8, 8, 1),
        ("next_seq", 16, 8, 1),
        ("idle_drains", 24, 4, 1),
        ("_reserved", 28, 4, 1),
        ("idle_period_ns", 32, 8, 1),
    ]


@pytest.mark.kernel
def test_ringbridge_counters_matches_bpfobj(bpf_object_path: Path) -> None:
    size, rows = layout(bpf_object_path, "ringbridge_counters")
    assert size == counters.COUNTERS_VALUE_SIZE
    n_err = len(counters.DRAIN_ERROR_NAMES)
    k = counters.MAX_KINDS
    assert rows == [
        ("samples", 0, 8, 1),
        ("bytes", 8, 8, 1),
        ("drain_calls", 16, 8, 1),
        ("drain_errors", 24, 8 * n_err, n_err),
        ("short_samples", 56, 8, 1),
        ("kind_overflow", 64, 8, 1),
        ("carry_begin", 72, 8, 1),
        ("kind_count", 80, 8 * k, k),
        ("kind_value", 80 + 8 * k, 8 * k, k),
        ("kind_value_hi", 80 + 16 * k, 8 * k, k),
        ("carry_end", 80 + 24 * k, 8, 1),
    ]
    # The reader's word indexes (kernel/counters.py) say the same.
    words = (counters.CARRY_BEGIN, counters.KIND_VALUE_HI, counters.CARRY_END)
    assert [8 * w for w in words] == [72, 80 + 16 * k, size - 8]
