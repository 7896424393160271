"""Where a setting's value comes from and how it parses.

Flags, environment variables and the settings file share the annotated value
types here (sizes with K/M/G suffixes, repeatable lists given comma-separated
in the environment, ``NAME=SIZE`` and ``NAME=VALUE`` pairs); :class:`TomlFileSource` reads the
TOML settings file, below flags and the environment in priority.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator
from pydantic.fields import FieldInfo
from pydantic_settings import NoDecode, PydanticBaseSettingsSource

from .errors import ConfigError
from .units import parse_size

__all__ = [
    "CONFIG_ENV",
    "Globals",
    "MapSizes",
    "Names",
    "Paths",
    "Size",
    "TomlFileSource",
    "config_file",
    "parse_globals",
    "parse_map_sizes",
]

#: A byte count: an int, or a string with a K/M/G suffix.
Size = Annotated[int, BeforeValidator(parse_size)]


def _items(value: Any) -> list[str]:
    """A repeated flag's list, or one comma-separated string (an environment variable)."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list | tuple):
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

#: The settings file in use while a Settings is being built (see :meth:`Settings.load`).
config_file: ContextVar[Path | None] = ContextVar("ringbridge_config_file", default=None)
#: The environment variable that names the settings file when no ``--config`` does.
CONFIG_ENV = "RINGBRIDGE_CONFIG"


class TomlFileSource(PydanticBaseSettingsSource):
    """Field values from the TOML settings file, below the environment in priority."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        raise NotImplementedError  # __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        path = config_file.get()
        if path is None:
            env = os.environ.get(CONFIG_ENV)
            path = Path(env) if env else None
        if path is None:
            return {}
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(f"settings file {path}: cannot read: {exc.strerror or exc}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"settings file {path}: not valid TOML: {exc}") from exc
        values = {str(k).replace("-", "_"): v for k, v in data.items()}
        unknown = sorted(set(values) - set(self.settings_cls.model_fields))
        if unknown:
            raise ConfigError(f"settings file {path}: unknown settings: {', '.join(unknown)}")
        return values
