"""JSON structure checks no decoder makes: repeated keys, nesting depth, a frame's id.

msgspec, like most JSON decoders, keeps the last of two equal keys in an
object, so ``{"kind": 1, "kind": 2}`` would silently be kind 2; ringbridge
refuses it (RFC 8259 §4: names SHOULD be unique, and two readers of the same
body must not see two different samples). A Python check per sample would
double the cost of the JSON path, so the scan is ``rb_json_dup_keys`` in
``bpf/jsonkeys.c`` (in ``libringbridge_validate.so``), at memory speed over
the raw body before it is decoded. Keys written with escapes, and every body
when the library is not built, take the exact stdlib path instead.

The same scan caps nesting at 128 levels (the decoders recurse) and locates
the top-level ``"id"`` member, so that a WebSocket frame refused for its
other parts can still be answered with its own id.
"""

from __future__ import annotations

import ctypes
import json
from typing import Any, Final

import msgspec

from ..errors import SampleError
from ..nativelib import VALIDATE

__all__ = ["MAX_DEPTH", "check_duplicate_keys", "duplicate_key_exact", "id_member"]

MAX_DEPTH: Final = 128
# rb_json_dup_keys() verdicts.
_DUPLICATE, _ESCAPED_KEY, _TOO_DEEP, _NOMEM = 1, 2, 3, 4


class _KeysResult(ctypes.Structure):
    _fields_ = [
        ("offset", ctypes.c_uint64),
        ("sample_index", ctypes.c_int64),
        ("key_len", ctypes.c_uint32),
        ("_reserved", ctypes.c_uint32),
        ("id_start", ctypes.c_uint64),
        ("id_end", ctypes.c_uint64),
    ]


# A scan of the whole body: the GIL is released.
_DUP_KEYS = VALIDATE.function(
    "rb_json_dup_keys",
    ctypes.c_int,
    ctypes.c_char_p,
    ctypes.c_size_t,
    ctypes.POINTER(_KeysResult),
    releases_gil=True,
)


def _scan() -> Any:
    """The C scan, or None (said once) when it is not built."""
    return _DUP_KEYS.find(
        "the stdlib duplicate-key check (slower; a refused frame's id is not recovered)"
    )


class _DuplicateKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise _DuplicateKey(k)
        seen[k] = v
    return seen


def duplicate_key_exact(raw: bytes) -> str | None:
    """The first repeated key, escapes decoded (slow: for rare bodies and tests)."""
    try:
        json.loads(raw, object_pairs_hook=_refuse_duplicates)
    except _DuplicateKey as exc:
        return exc.key
    except (ValueError, RecursionError):
        return None  # malformed: the decoder reports it precisely
    return None


def check_duplicate_keys(body: bytes | str) -> None:
    """Raise :class:`SampleError` for an object naming a key twice, or nesting too deep.

    ``index`` is the sample holding the repeated key (-1 outside samples, or
    when the exact path found it).
    """
    raw = body.encode() if isinstance(body, str) else body
    fn = _scan()
    index = -1
    if fn is None:
        key = duplicate_key_exact(raw)
    else:
        res = _KeysResult()
        verdict = fn(raw, len(raw), ctypes.byref(res))
        if verdict == 0:
            return
        if verdict == _TOO_DEEP:
            raise SampleError(
                f"invalid JSON: nested deeper than {MAX_DEPTH} levels at byte {res.offset}", -1
            )
        if verdict == _NOMEM:
            raise MemoryError("duplicate-key scan of a JSON body")
        index = int(res.sample_index)
        if verdict == _DUPLICATE:
            start = int(res.offset) + 1
            key = raw[start : start + int(res.key_len)].decode(errors="replace")
        else:  # a key with escapes: compare decoded keys
            key = duplicate_key_exact(raw)
    if key is not None:
        where = "a sample" if index >= 0 else "an object"
        raise SampleError(
            f"{where} names key {key!r} twice: keys must be unique (decoders disagree on "
            "which one wins)",
            index,
        )


_ID_ONLY: msgspec.json.Decoder[Any] = msgspec.json.Decoder(
    msgspec.defstruct("FrameIdMember", [("id", Any, None)])
)


def id_member(data: str | bytes) -> Any:
    """The top-level ``id`` of a frame, decoded alone (None when not found whole).

    For frames whose other parts defeat the decoder (nested too deeply,
    malformed after the id): the scan locates the member, msgspec reads it.
    """
    fn = _scan()
    if fn is None:
        return None
    raw = data.encode() if isinstance(data, str) else data
    res = _KeysResult()
    fn(raw, len(raw), ctypes.byref(res))
    if res.id_end <= res.id_start:
        return None
    try:
        return _ID_ONLY.decode(b'{"id"' + raw[res.id_start : res.id_end] + b"}").id
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
        return None
