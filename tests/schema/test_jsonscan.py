"""The native JSON scanner against the exact path: accept-only, same bytes.

Whenever ``rb_json_scan`` accepts a body or frame, the exact path (msgspec's
typed decode and the packers, with the duplicate-key and count checks) must
accept it too and give byte-identical records (and the same frame id); when
it gives up, the exact path decides alone. Bodies are drawn as token streams,
so that what a JSON encoder never writes is drawn too: repeated and escaped
keys, floats, ``-0``, leading zeros, numbers just out of range, strings,
``data`` samples, odd whitespace, truncation and stray bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ringbridge.errors import RingbridgeError, SampleError
from ringbridge.kernel.bpfobj import default_object_path
from ringbridge.schema import SampleCodec
from ringbridge.schema.jsonscan import JsonScanner, TableField, emit_table

SETTINGS = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
RING = 1 << 20
LIMIT = 4096


def _codecs(obj: Path, type_name: str) -> tuple[SampleCodec, SampleCodec]:
    """(the codec with its scanner, the same codec with the exact path only)."""
    fast = SampleCodec.from_object(obj, type_name)
    exact = SampleCodec.from_object(obj, type_name)
    exact.scanner = None
    assert fast.scanner is not None, f"{type_name} should have a scanner table"
    return fast, exact


@pytest.fixture(scope="module", params=["ringbridge_sample", "flat", "named"])
def codecs(request: pytest.FixtureRequest, types_object: Path) -> tuple[SampleCodec, SampleCodec]:
    # "named": keys matched by one word compare (7 bytes and fewer) and not.
    if request.param in ("flat", "named"):
        return _codecs(types_object, request.param)
    return _codecs(default_object_path(), "ringbridge_sample")


def _range(f: TableField) -> tuple[int, int]:
    if f.kind == 2:
        return 0, 1
    bits = 8 * f.size
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if f.kind == 1 else (0, (1 << bits) - 1)


WS = st.sampled_from(["", "", "", " ", "\n", "\t ", "\r\n  ", "\x0b", "\u00a0"])


@st.composite
def number_token(draw: st.DrawFn, f: TableField) -> str:
    """In range mostly; at and past the edges, floats, -0, leading zeros, other types."""
    lo, hi = _range(f)
    if f.kind == 2:
        return draw(st.sampled_from(["true", "false"] * 8 + ["1", "0", "null", '"true"', "tru"]))
    choice = draw(st.integers(0, 20))
    if choice <= 12:
        return str(draw(st.integers(lo, hi)))
    if choice == 13:
        return str(draw(st.sampled_from([lo - 1, hi + 1, lo, hi, 2**64, -(2**63) - 1, 10**19])))
    if choice == 14:
        return draw(st.sampled_from(["-0", "00", "01", "-01", "1.0", "1e3", "1E0", "-", "+1"]))
    if choice == 15:
        return f'"{draw(st.integers(lo, hi))}"'
    if choice == 16:
        return draw(st.sampled_from(["true", "false", "null", "[]", "{}", '""']))
    return str(draw(st.integers(-(2**70), 2**70)))


def _near_misses(names: list[str]) -> list[str]:
    return [n[:-1] for n in names] + [n + "x" for n in names] + [n[:-1] + "#" for n in names]


@st.composite
def sample_text(draw: st.DrawFn, table: tuple[TableField, ...]) -> str:
    names = [f.name for f in table]
    by_name = {f.name: f for f in table}
    keys = draw(
        st.lists(
            st.one_of(
                st.sampled_from(names),
                st.sampled_from(names),
                st.sampled_from(names),
                st.sampled_from(["data", "Kind", "unknown", "k\\u0069nd", "", 'x\\"y']),
                # Near misses of a member's key: a prefix, a longer key, its last byte changed.
                st.sampled_from(_near_misses(names)),
            ),
            max_size=len(names) + 1,
        )
    )
    if draw(st.integers(0, 9)) == 0:
        return draw(st.sampled_from(['{"data": "AAAA"}', "[]", "null", "1", '"s"', "{"]))
    parts = []
    for k in keys:
        f = by_name.get(k)
        value = (
            draw(number_token(f))
            if f is not None
            else draw(st.sampled_from(['"AAAA"', "1", "null"]))
        )
        parts.append(f'{draw(WS)}"{k}"{draw(WS)}:{draw(WS)}{value}{draw(WS)}')
    return "{" + ",".join(parts) + draw(WS) + "}"


@st.composite
def samples_of_a_shape(draw: st.DrawFn, table: tuple[TableField, ...]) -> list[str]:
    """Samples written alike (the scanner matches each against the one before
    it), each with its own values, some with one thing changed: a gap's
    whitespace, a key (another member, repeated, a near miss), a member
    dropped or added, or a sample of another shape."""
    names = [f.name for f in table]
    by_name = {f.name: f for f in table}
    keys = draw(st.lists(st.sampled_from(names), min_size=0, max_size=len(names), unique=True))
    gaps = [draw(st.tuples(WS, WS, WS, WS)) for _ in keys]
    close = draw(WS)
    out = []
    for _ in range(draw(st.integers(2, 8))):
        ks, gs, end = list(keys), list(gaps), close
        change = draw(st.integers(0, 9))
        if change == 0 and ks:
            i = draw(st.integers(0, len(ks) - 1))
            gs[i] = draw(st.tuples(WS, WS, WS, WS))
        elif change == 1 and ks:
            i = draw(st.integers(0, len(ks) - 1))
            ks[i] = draw(st.sampled_from(names + _near_misses(names)))
        elif change == 2 and ks:
            i = draw(st.integers(0, len(ks) - 1))
            del ks[i], gs[i]
        elif change == 3:
            ks.append(draw(st.sampled_from(names)))
            gs.append(("", "", "", ""))
        elif change == 4:
            end = draw(WS)
        elif change == 5:
            out.append(draw(sample_text(table)))
            continue
        parts = []
        for k, (a, b, c, d) in zip(ks, gs, strict=True):
            f = by_name.get(k)
            value = draw(number_token(f)) if f is not None else "1"
            parts.append(f'{a}"{k}"{b}:{c}{value}{d}')
        out.append("{" + ",".join(parts) + end + "}")
    return out


@SETTINGS
@given(data=st.data(), frame=st.booleans())
def test_samples_written_alike_are_taken_as_the_exact_path_takes_them(
    codecs: tuple[SampleCodec, SampleCodec], data: st.DataObject, frame: bool
) -> None:
    """The scanner's match against the shape of the sample before: what it
    accepts, the exact path accepts with the same bytes."""
    fast, exact = codecs
    assert fast.scanner is not None
    samples = data.draw(samples_of_a_shape(fast.scanner.table))
    sep = data.draw(st.sampled_from([",", ", ", ",\n  "]))
    raw = ('{"samples": [' + sep.join(samples) + "]}").encode()
    _as_the_exact_path(fast, exact, raw, frame)


def _of_width(data: st.DataObject, f: TableField, k: int) -> str:
    """A value of ``k`` digits in ``f``'s range (or "1" when there is none)."""
    hi = _range(f)[1]
    first, top = (0 if k == 1 else 10 ** (k - 1)), min(hi, 10**k - 1)
    return str(data.draw(st.integers(first, top))) if first <= top else "1"


def _odd_of_width(data: st.DataObject, f: TableField, k: int) -> str:
    """A token that looks like a ``k``-digit value up to that width only: a
    leading zero, a fraction, an exponent, a sign, out of range, a digit more,
    whitespace first."""
    plain = _of_width(data, f, k)
    _, hi = _range(f)
    choice = data.draw(st.integers(0, 7))
    return [
        "0" * k,
        "0" + plain[1:] if k > 1 else "00",
        plain + ".5",
        plain + data.draw(st.sampled_from(["e1", "E0"])),
        "-" + plain[1:] if k > 1 else "-" + plain,
        str(data.draw(st.integers(max(10 ** (k - 1), hi + 1), max(10**k - 1, hi + 1)))),
        plain + data.draw(st.sampled_from(["0", "9"])),
        data.draw(st.sampled_from([" ", "\n"])) + plain,
    ][choice]


@SETTINGS
@given(data=st.data())
def test_values_that_keep_their_width_are_taken_as_the_exact_path_takes_them(
    codecs: tuple[SampleCodec, SampleCodec], data: st.DataObject
) -> None:
    """The shape match expects each value at the width it had in the sample
    before (value_w in jsonscan.c): samples whose values keep their widths, one
    value perhaps odd (alike up to that width only), give the exact path's
    records -- or the scanner gives up."""
    fast, exact = codecs
    assert fast.scanner is not None
    table = [f for f in fast.scanner.table if f.kind != 2]
    # Often the width of the member's largest value: a value of that width may be out of range.
    widths = [data.draw(st.sampled_from([len(str(_range(f)[1])), 1, 2, 3, 5, 8])) for f in table]
    rows = [
        [_of_width(data, f, k) for f, k in zip(table, widths, strict=True)]
        for _ in range(data.draw(st.integers(2, 12)))
    ]
    if data.draw(st.integers(0, 3)):
        i, j = data.draw(st.integers(1, len(rows) - 1)), data.draw(st.integers(0, len(table) - 1))
        rows[i][j] = _odd_of_width(data, table[j], widths[j])
    samples = [
        "{" + ",".join(f'"{f.name}":{v}' for f, v in zip(table, row, strict=True)) + "}"
        for row in rows
    ]
    raw = ('{"samples":[' + ",".join(samples) + "]}").encode()
    _as_the_exact_path(fast, exact, raw, False)


@st.composite
def body_text(draw: st.DrawFn, table: tuple[TableField, ...], frame: bool) -> str:
    samples = draw(st.lists(sample_text(table), max_size=6))
    members = [f'"samples"{draw(WS)}:{draw(WS)}[' + ",".join(samples) + draw(WS) + "]"]
    if frame and draw(st.booleans()):
        ident = draw(
            st.one_of(
                st.integers(-(10**20), 10**20).map(str),
                st.sampled_from(["true", "false", "null", '"a b"', '"\\n"', '"é"', "1.5", "[1]"]),
                st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8).map(
                    json.dumps
                ),
            )
        )
        members.append(f'"id"{draw(WS)}:{draw(WS)}{ident}')
    extra = draw(st.integers(0, 12))
    if extra == 0:
        members.append('"other": 1')
    elif extra == 1:
        members.append(members[0])  # "samples" twice
    if draw(st.booleans()):
        members.reverse()
    text = draw(WS) + "{" + ",".join(members) + "}" + draw(WS)
    cut = draw(st.integers(0, 30))
    if cut == 0:
        text = text[: draw(st.integers(0, len(text)))]
    elif cut == 1:
        text += draw(st.sampled_from(["x", "}", ",", "\0"]))
    return text


def _decode(codec: SampleCodec, raw: bytes, frame: bool) -> tuple[Any, bytes, int] | str:
    try:
        if frame:
            fid, batch = codec.decode_ws_text_frame(
                raw, ring_size=RING, max_sample_bytes=LIMIT, max_samples=64
            )
        else:
            batch = codec.decode_json_batch(
                raw, ring_size=RING, max_sample_bytes=LIMIT, max_samples=64
            )
            fid = None
    except RingbridgeError as exc:
        return f"{exc.code}: {exc.message}"
    return fid, bytes(batch.records), batch.count


def _as_the_exact_path(fast: SampleCodec, exact: SampleCodec, raw: bytes, frame: bool) -> None:
    """What the scanner takes, the exact path takes with the same records; and
    through the codec (scanner first) the answer is the exact path's."""
    assert fast.scanner is not None
    scanned = fast.scanner.scan(raw, frame=frame, max_samples=64, limit=64 * 64)
    reference = _decode(exact, raw, frame)
    if scanned is not None:
        assert not isinstance(reference, str), f"scanner took what the exact path refuses: {raw!r}"
        assert (scanned.records, scanned.count) == reference[1:], raw
    assert _decode(fast, raw, frame) == reference


@SETTINGS
@given(data=st.data(), frame=st.booleans())
def test_what_the_scanner_accepts_the_exact_path_accepts_with_the_same_bytes(
    codecs: tuple[SampleCodec, SampleCodec], data: st.DataObject, frame: bool
) -> None:
    fast, exact = codecs
    assert fast.scanner is not None
    raw = data.draw(body_text(fast.scanner.table, frame)).encode()
    most = 64
    scanned = fast.scanner.scan(raw, frame=frame, max_samples=most, limit=most * 64)
    reference = _decode(exact, raw, frame)
    if scanned is not None:
        assert not isinstance(reference, str), f"scanner took what the exact path refuses: {raw!r}"
        fid, records, count = reference
        assert (scanned.id, scanned.records, scanned.count) == (fid, records, count), raw
    # Through the codec (scanner first) the answer is always the exact path's.
    assert _decode(fast, raw, frame) == reference


@SETTINGS
@given(data=st.data(), frame=st.booleans())
def test_plain_batches_are_taken_by_the_scanner(
    codecs: tuple[SampleCodec, SampleCodec], data: st.DataObject, frame: bool
) -> None:
    """What a JSON encoder writes for in-range members is the scanner's (not vacuous)."""
    fast, _ = codecs
    assert fast.scanner is not None
    table = fast.scanner.table
    samples = data.draw(
        st.lists(
            st.fixed_dictionaries(
                {},
                optional={
                    f.name: st.booleans() if f.kind == 2 else st.integers(*_range(f)) for f in table
                },
            ),
            min_size=1,
            max_size=20,
        )
    )
    doc: dict[str, Any] = {"samples": samples}
    if frame:
        ids = st.one_of(st.integers(-(10**17), 10**17), st.text("abc xyz", max_size=5))
        doc["id"] = data.draw(ids)
    raw = json.dumps(doc, indent=data.draw(st.sampled_from([None, 1]))).encode()
    scanned = fast.scanner.scan(raw, frame=frame, max_samples=64, limit=64 * 64)
    assert scanned is not None, raw
    assert scanned.count == len(samples)
    if frame:
        assert scanned.id == doc["id"]


def test_tables_are_emitted_only_for_integer_layouts(types_object: Path) -> None:
    assert emit_table(SampleCodec.from_object(types_object, "every").node) is None
    assert emit_table(SampleCodec.from_object(types_object, "op_sample").node) is None
    table = emit_table(SampleCodec.from_object(types_object, "flat").node)
    assert table is not None
    assert [(f.name, f.offset, f.size, f.kind) for f in table] == [
        ("u8", 0, 1, 0),
        ("s16", 2, 2, 1),
        ("flag", 4, 1, 2),
        ("s32", 8, 4, 1),
        ("u64", 16, 8, 0),
        ("c", 24, 1, 1),  # plain char is signed for the BPF target
        ("s64", 32, 8, 1),
        ("u32", 40, 4, 0),
        ("s8", 44, 1, 1),
    ]


def test_errors_keep_their_index_and_path_with_the_scanner(
    codecs: tuple[SampleCodec, SampleCodec],
) -> None:
    fast, exact = codecs
    assert fast.scanner is not None
    good = {f.name: True if f.kind == 2 else 1 for f in fast.scanner.table}
    body = json.dumps({"samples": [good, good, {**good, "nope": 1}]}).encode()
    with pytest.raises(SampleError) as a:
        fast.decode_json_batch(body, ring_size=RING, max_sample_bytes=LIMIT)
    with pytest.raises(SampleError) as b:
        exact.decode_json_batch(body, ring_size=RING, max_sample_bytes=LIMIT)
    assert (a.value.code, a.value.message, a.value.index) == (
        b.value.code,
        b.value.message,
        b.value.index,
    )
    assert a.value.index == 2 and "nope" in a.value.message


def test_a_scanner_is_built_for_the_default_sample() -> None:
    codec = SampleCodec.from_object(default_object_path())
    assert isinstance(codec.scanner, JsonScanner)
    assert [f.name for f in codec.scanner.table] == ["kind", "flags", "value"]
