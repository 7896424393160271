"""Do two definitions of a type agree, and does a type fit what the object declares?

A sample type found outside the object (a header, a ``ringbridge types``
file) can be stale: the program was rebuilt with another layout. Nothing in
an object records the size a program passes to ``bpf_dynptr_data()``, so
what can be checked is what the object *does* declare:

- a type of the same name in the object's own BTF (it then must match);
- the value type or size a ring map declares (``__type(value, T)`` or
  ``__uint(value_size, N)``), read from the object file. Whether such an
  object loads depends on the libbpf: 1.1 (Debian 12) passes the value size
  on to the kernel, which refuses ring buffer maps with one (EINVAL).

:func:`layout_difference` compares layouts, not spellings: typedef names,
qualifiers and an enum's signedness flag (which clang < 15 never sets) do not
count; sizes, offsets, member names, bitfields, element counts, integer
signedness and enum values do.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import RingbridgeError, SchemaError
from . import btf as btf_reader
from . import model

__all__ = ["check_map_value", "declared_value", "layout_difference"]


def _c(t: model.Type) -> str:
    if isinstance(t, model.Composite):
        return t.c_name
    if isinstance(t, model.Array):
        return f"{_c(t.elem)}[{t.count}]"
    if isinstance(t, model.Enum):
        return f"enum {t.name}" if t.name else "anonymous enum"
    if isinstance(t, model.Opaque):
        return f"{t.what} {t.name}".strip()
    return t.name


def layout_difference(a: model.Type, b: model.Type, path: str = "") -> str | None:
    """The first way ``a`` and ``b`` lay out differently (a sentence), or None."""
    at = path or _c(a)
    if type(a) is not type(b):
        return f"{at}: {_c(a)} vs {_c(b)}"
    if a.size != b.size:
        return f"{at}: {a.size} vs {b.size} bytes"
    if isinstance(a, model.Int) and isinstance(b, model.Int):
        if (a.signed, a.is_bool, a.is_char) != (b.signed, b.is_bool, b.is_char):
            return f"{at}: {a.name} vs {b.name}"
        return None
    if isinstance(a, model.Enum) and isinstance(b, model.Enum):
        mod = 1 << (8 * a.size)
        va = {n: v % mod for n, v in a.values}
        vb = {n: v % mod for n, v in b.values}
        if va != vb:
            diff = sorted(set(va.items()) ^ set(vb.items()))
            return f"{at}: enumerators differ ({', '.join(f'{n}={v}' for n, v in diff[:4])})"
        return None
    if isinstance(a, model.Array) and isinstance(b, model.Array):
        if a.count != b.count:
            return f"{at}: {a.count} vs {b.count} elements"
        return layout_difference(a.elem, b.elem, f"{at}[]")
    if isinstance(a, model.Composite) and isinstance(b, model.Composite):
        if a.kind != b.kind:
            return f"{at}: {a.kind} vs {b.kind}"
        if len(a.members) != len(b.members):
            return f"{at}: {len(a.members)} vs {len(b.members)} members"
        for i, (ma, mb) in enumerate(zip(a.members, b.members, strict=True)):
            where = f"{at}.{ma.name or f'<anonymous #{i}>'}"
            if ma.name != mb.name:
                na, nb = ma.name or "<anonymous>", mb.name or "<anonymous>"
                return f"{at}: member {i} is {na!r} vs {nb!r}"
            if (ma.bit_offset, ma.bits) != (mb.bit_offset, mb.bits):
                return (
                    f"{where}: at bit {ma.bit_offset} ({ma.bits or 'not a'} bitfield) vs "
                    f"bit {mb.bit_offset} ({mb.bits or 'not a'} bitfield)"
                )
            found = layout_difference(ma.type, mb.type, where)
            if found is not None:
                return found
        return None
    if isinstance(a, model.Opaque) and isinstance(b, model.Opaque) and a.what != b.what:
        return f"{at}: {a.what} vs {b.what}"
    return None


def declared_value(obj_path: Path, map_name: str) -> tuple[int, model.Type | None]:
    """What ``map_name`` of the object at ``obj_path`` declares as its value:
    ``(value_size, type or None)``; ``(0, None)`` when it declares nothing."""
    from ..kernel import libbpf as lb

    try:
        with lb.BpfObject.open(obj_path) as obj:
            m = obj.map(map_name)
            size, type_id = m.value_size, m.btf_value_type_id
            t = btf_reader.read_type(obj.btf(), type_id) if type_id else None
    except RingbridgeError as exc:
        raise SchemaError(f"cannot read map {map_name!r} of {obj_path}: {exc.message}") from exc
    return size, t


def check_map_value(
    t: model.Type,
    type_name: str,
    *,
    map_name: str,
    value_size: int,
    value_type: model.Type | None = None,
    where: str = "",
) -> None:
    """SchemaError when map ``map_name`` declares values that ``type_name`` (``t``) is not.

    ``value_size`` 0 and no ``value_type``: nothing declared, nothing to check.
    ``where`` names the type's origin in the message.
    """
    origin = f" (from {where})" if where else ""
    if value_type is not None:
        diff = layout_difference(t, value_type, type_name)
        if diff is not None:
            raise SchemaError(
                f"{type_name}{origin} does not match the value type map {map_name!r} declares "
                f"({_c(value_type)}): {diff}"
            )
    if value_size and value_size != t.size:
        raise SchemaError(
            f"{type_name}{origin} is {t.size} bytes, but map {map_name!r} declares values of "
            f"{value_size} bytes"
        )
