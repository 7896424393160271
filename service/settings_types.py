"""The value types of settings, each parsed the same from a flag, a variable or the file.

Sizes take K/M/G suffixes (:mod:`ringbridge.units`); durations are finite
seconds up to a day; lists are a repeated flag, a comma-separated variable or
a TOML array; the token is what a client can present.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field
from pydantic_settings import NoDecode

from .errors import ConfigError
from .units import parse_size

#: A byte count: an int, or a string with a K/M/G suffix.
Size = Annotated[int, BeforeValidator(parse_size)]


def _size_or_off(value: Any) -> int:
    return 0 if value in (0, "0") else parse_size(value)


#: A byte count, or 0 for "off".
SizeOrOff = Annotated[int, BeforeValidator(_size_or_off)]

#: The longest duration a setting takes: a day. Far beyond any sensible
#: timeout, and every timer and ``math.ceil`` the service feeds it works.
MAX_SECONDS = 86_400.0
#: A duration in seconds: finite (``inf`` and ``nan`` are refused), at most a day.
Seconds = Annotated[float, Field(allow_inf_nan=False, le=MAX_SECONDS)]


def _items(value: Any) -> list[str]:
    """A repeated flag's list, or one comma-separated string (an environment variable)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list | tuple):
        # Names or paths (a Path when settings are rebuilt from settings);
        # never numbers or tables (a TOML file can hold anything).
        if not all(isinstance(item, str | os.PathLike) for item in value):
            raise ValueError(f"expected a list of names, got {value!r}")
        return [str(item).strip() for item in value]
    raise ValueError(f"expected a list or a comma-separated string, got {value!r}")


def parse_map_sizes(value: Any) -> dict[str, int]:
    """``{"NAME": bytes}`` from ``["NAME=SIZE", ...]``, ``"A=1K,B=2M"`` or a TOML table."""
    if isinstance(value, dict):
        pairs = [(str(k), v) for k, v in value.items()]
    else:
        pairs = []
        for item in _items(value):
            name, sep, size = item.partition("=")
            if not sep or not name.strip() or not size.strip():
                raise ValueError(f"map size {item!r}: expected NAME=SIZE, e.g. slots=1K")
            pairs.append((name.strip(), size.strip()))
    out: dict[str, int] = {}
    for name, size in pairs:
        if name in out:
            raise ValueError(f"map size for {name!r} given twice")
        out[name] = parse_size(size)
    return out


def parse_globals(value: Any) -> dict[str, int]:
    """``{"NAME": int}`` from ``["NAME=VALUE", ...]``, ``"a=1,b=0x10"`` or a TOML table."""
    if isinstance(value, dict):
        pairs = [(str(k), v) for k, v in value.items()]
    else:
        pairs = []
        for item in _items(value):
            name, sep, text = item.partition("=")
            if not sep or not name.strip() or not text.strip():
                raise ValueError(f"global {item!r}: expected NAME=VALUE, e.g. pid=1234")
            pairs.append((name.strip(), text.strip()))
    out: dict[str, int] = {}
    for name, v in pairs:
        if name in out:
            raise ValueError(f"global {name!r} given twice")
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise ValueError(f"global {name!r}: {v!r} is not an integer")
        try:
            out[name] = v if isinstance(v, int) else int(v, 0)
        except ValueError:
            raise ValueError(
                f"global {name!r}: {v!r} is not an integer (e.g. 42, -1, 0x2a)"
            ) from None
    return out


#: ``NAME=VALUE`` integers (repeatable flag; comma-separated in the environment).
Globals = Annotated[dict[str, int], NoDecode, BeforeValidator(parse_globals)]
#: ``NAME=SIZE`` pairs (repeatable flag; comma-separated in the environment).
MapSizes = Annotated[dict[str, int], NoDecode, BeforeValidator(parse_map_sizes)]
#: Names (repeatable flag; comma-separated in the environment).
Names = Annotated[list[str], NoDecode, BeforeValidator(_items)]
#: Paths (repeatable flag; comma-separated in the environment).
Paths = Annotated[list[Path], NoDecode, BeforeValidator(_items)]


def usable_token(token: str) -> str:
    """The token as a client can present it; ConfigError if none could.

    Surrounding whitespace is dropped: HTTP strips it from every header value
    (RFC 9110 §5.5), so ``--token 'abc '`` could never be presented as
    written -- and a token file's final newline is no part of the token
    either. What is left must be printable ASCII: a header value's bytes
    reach the service decoded as Latin-1, so a non-ASCII token would match
    only a client that encodes it the same way (most send UTF-8 or refuse).
    """
    stripped = token.strip()
    if not stripped:
        raise ConfigError("token is empty; unset it to disable authentication")
    bad = sorted({c for c in stripped if not " " <= c <= "~"})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise ConfigError(
            f"token holds characters a client cannot send in an Authorization header "
            f"({shown}): use printable ASCII, e.g. `python3 -c 'import secrets; "
            "print(secrets.token_hex(24))'`"
        )
    return stripped
