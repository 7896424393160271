"""Byte sizes as people write them: ``4096``, ``64K``, ``8M``, ``1G`` (binary multiples).

One parser for flags, environment variables and settings files, so ``--ring-size 8M``
and ``RINGBRIDGE_RING_SIZE=8M`` mean the same.
"""

from __future__ import annotations

_SUFFIXES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: str | int) -> int:
    """Bytes from an int or a string with an optional K/M/G (KiB/MiB/GiB) suffix.

    Raises ValueError (with the offending text) for anything else or a size <= 0.
    """
    if isinstance(text, bool) or not isinstance(text, int | str):
        # A TOML file can hold anything (`ring_size = [1, 2]`, `= true`).
        raise ValueError(f"invalid size {text!r}: use bytes or a K/M/G suffix, e.g. 8M")
    if isinstance(text, int):
        n = text
    else:
        t = text.strip().lower().removesuffix("ib").removesuffix("b")
        mult = 1
        if t and t[-1] in _SUFFIXES:
            mult = _SUFFIXES[t[-1]]
            t = t[:-1]
        try:
            n = int(t) * mult
        except ValueError:
            raise ValueError(
                f"invalid size {text!r}: use bytes or a K/M/G suffix, e.g. 8M"
            ) from None
    if n <= 0:
        raise ValueError(f"invalid size {text!r}: must be positive")
    return n
