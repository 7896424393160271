"""Layout checks: two definitions of a type agree, a type fits what a map declares."""

from __future__ import annotations

from pathlib import Path

import pytest

from ringbridge.errors import SchemaError
from ringbridge.schema import (
    TypeSources,
    check_map_value,
    declared_value,
    layout_difference,
)
from ringbridge.schema import model as m
from tests.support.upstream import PROTO_HEADER, clang_or_skip, compile_bpf

U32 = m.Int("__u32", 4, False)
S32 = m.Int("__s32", 4, True)
U64 = m.Int("__u64", 8, False)


def _struct(*members: tuple[str, int, m.Type], size: int = 16, name: str = "s") -> m.Composite:
    return m.Composite("struct", name, size, tuple(m.Member(n, off, t) for n, off, t in members))


def test_equal_layouts_have_no_difference() -> None:
    a = _struct(("a", 0, U32), ("b", 64, U64))
    # Other spellings of the same layout (typedef names are not in the model;
    # enum signedness clang < 15 leaves unset).
    b = _struct(("a", 0, m.Int("unsigned int", 4, False)), ("b", 64, U64))
    assert layout_difference(a, b) is None
    e1 = m.Enum("op", 4, False, (("A", 0), ("NEG", 4294967295)))
    e2 = m.Enum("op", 4, True, (("A", 0), ("NEG", -1)))
    assert layout_difference(e1, e2) is None


@pytest.mark.parametrize(
    ("b", "says"),
    [
        (_struct(("a", 0, U32), ("b", 32, U32), size=8), "s: 16 vs 8 bytes"),
        (_struct(("a", 0, U32), ("c", 64, U64)), "member 1 is 'b' vs 'c'"),
        (_struct(("a", 0, U32), ("b", 32, U64)), "s.b: at bit 64"),
        (_struct(("a", 0, S32), ("b", 64, U64)), "s.a: __u32 vs __s32"),
        (_struct(("a", 0, U32), ("b", 64, m.Array(U32, 2))), "s.b: __u64 vs __u32[2]"),
    ],
)
def test_differences_are_named_by_member(b: m.Composite, says: str) -> None:
    a = _struct(("a", 0, U32), ("b", 64, U64))
    diff = layout_difference(a, b)
    assert diff is not None and says in diff


def test_enum_values_must_agree() -> None:
    a = m.Enum("op", 4, False, (("A", 0), ("B", 1)))
    b = m.Enum("op", 4, False, (("A", 0), ("B", 2)))
    assert "enumerators differ (B=1, B=2)" in (layout_difference(a, b) or "")


def test_a_map_declaring_its_value_type_is_checked(tmp_path: Path) -> None:
    clang_or_skip()
    src = tmp_path / "declared.bpf.c"
    src.write_text(
        "#include <linux/types.h>\n#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
        f'#include "{PROTO_HEADER}"\n'
        'char _license[] SEC("license") = "GPL";\n'
        "struct { __uint(type, BPF_MAP_TYPE_USER_RINGBUF); __uint(max_entries, 4096);\n"
        '         __type(value, struct test_msg); } requests SEC(".maps");\n'
        "struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); }\n"
        '  replies SEC(".maps");\n'
    )
    obj = compile_bpf(src, tmp_path / "declared.bpf.o")
    size, t = declared_value(obj, "requests")
    assert size == 16 and t is not None and t.size == 16
    assert declared_value(obj, "replies") == (0, None)  # declares nothing: nothing to check
    with TypeSources.open(header=PROTO_HEADER) as sources:
        msg, reply = sources.find("test_msg"), sources.find("test_reply")
    check_map_value(msg.type, "test_msg", map_name="requests", value_size=size, value_type=t)
    with pytest.raises(SchemaError) as info:
        check_map_value(
            reply.type, "test_reply", map_name="requests", value_size=size, value_type=t,
            where=reply.where,
        )  # fmt: skip
    assert "does not match the value type map 'requests' declares (struct test_msg)" in (
        info.value.message
    )
    with pytest.raises(SchemaError, match="is 24 bytes, but map 'requests' declares values of 16"):
        check_map_value(reply.type, "test_reply", map_name="requests", value_size=16)
    check_map_value(reply.type, "test_reply", map_name="replies", value_size=0)


def test_a_setting_names_itself_when_its_type_does_not_fit_the_map(tmp_path: Path) -> None:
    """What the backends and the event feeds call (``TypeSources.find_for``): the type
    wherever it is found, checked against what the object file declares for the map."""
    clang_or_skip()
    src = tmp_path / "declared.bpf.c"
    src.write_text(
        "#include <linux/types.h>\n#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
        f'#include "{PROTO_HEADER}"\n'
        'char _license[] SEC("license") = "GPL";\n'
        "struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096);\n"
        '         __type(value, struct test_msg); } replies SEC(".maps");\n'
        "struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096);\n"
        '         __uint(value_size, 16); } sized SEC(".maps");\n'
    )
    obj = compile_bpf(src, tmp_path / "declared.bpf.o")
    with TypeSources.open(header=PROTO_HEADER) as sources:
        found = sources.find_for(
            "test_msg", "--event-map replies=test_msg", map_name="replies",
            declared=declared_value(obj, "replies"),
        )  # fmt: skip
        assert found.type.size == 16
        with pytest.raises(SchemaError) as info:
            sources.find_for(
                "test_reply", "--event-map replies=test_reply", map_name="replies",
                declared=declared_value(obj, "replies"),
            )  # fmt: skip
        assert info.value.message.startswith(
            f"--event-map replies=test_reply: test_reply (from --sample-header {PROTO_HEADER}) "
            "does not match the value type map 'replies' declares (struct test_msg)"
        )
        with pytest.raises(SchemaError, match="is 24 bytes, but map 'sized' declares values of 16"):
            sources.find_for(
                "test_reply", "--sample-type test_reply", map_name="sized",
                declared=declared_value(obj, "sized"),
            )  # fmt: skip
        # Without a map to check against, only the lookup counts.
        assert sources.find_for("test_reply", "--sample-type test_reply").type.size == 24
