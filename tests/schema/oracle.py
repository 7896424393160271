"""ctypes mirrors of types.bpf.c: the host C compiler's layout, independent of
the schema compiler (ctypes lays out structs, unions, anonymous members and
bitfields the way GCC does on Linux)."""

from __future__ import annotations

import ctypes as C

# enums are unsigned int (op, big64 is 8 bytes) or int (neg) in C.


class Inner(C.Structure):
    _fields_ = [("ops", C.c_uint16 * 3), ("delta", C.c_int8)]


class Hdr(C.Structure):
    _fields_ = [("version", C.c_uint8), ("in_", Inner), ("seq", C.c_uint64)]


class _XY(C.Structure):
    _fields_ = [("x", C.c_uint32), ("y", C.c_uint32)]


class _LoHi(C.Structure):
    _fields_ = [("lo", C.c_uint16), ("hi", C.c_uint16)]


class _AB(C.Union):
    _anonymous_ = ("_lohi",)
    _fields_ = [("a", C.c_uint32), ("b", C.c_float), ("_lohi", _LoHi)]


class _U(C.Union):
    _fields_ = [("bits", C.c_uint64), ("bytes", C.c_uint8 * 8)]


class Every(C.Structure):
    _anonymous_ = ("_xy", "_ab")
    _fields_ = [
        ("u8", C.c_uint8),
        ("s8", C.c_int8),
        ("u16", C.c_uint16),
        ("s16", C.c_int16),
        ("u32", C.c_uint32),
        ("s32", C.c_int32),
        ("u64", C.c_uint64),
        ("s64", C.c_int64),
        ("flag", C.c_bool),
        ("c", C.c_int8),  # plain char: a signed byte on the hosts we run on
        ("cv", C.c_uint32),
        ("op", C.c_uint32),
        ("neg", C.c_int32),
        ("big", C.c_uint64),
        ("f32", C.c_float),
        ("f64", C.c_double),
        ("name", C.c_char * 8),
        ("raw", C.c_uint8 * 4),
        ("grid", (C.c_uint16 * 3) * 2),
        ("hdr", Hdr),
        ("list", Inner * 2),
        ("_xy", _XY),
        ("_ab", _AB),
        ("u", _U),
        ("bf_a", C.c_uint32, 3),
        ("bf_b", C.c_int32, 5),
        ("bf_op", C.c_uint32, 4),
        ("_pad", C.c_uint32, 4),
        ("bf_c", C.c_uint32, 16),
        ("tail", C.c_uint8),
    ]


class _Set(C.Structure):
    _fields_ = [("slot", C.c_uint32), ("value", C.c_int64)]


class Msg(C.Union):
    _fields_ = [("set", _Set), ("word", C.c_uint64)]


class _Operand(C.Union):
    _fields_ = [("operand64", C.c_int64), ("operand32", C.c_int32)]


class OpSample(C.Structure):
    _anonymous_ = ("_operand",)
    _fields_ = [("op", C.c_uint32), ("_operand", _Operand), ("slot", C.c_char * 16)]
