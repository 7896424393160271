"""``ringbridge serve``: flags generated from the Settings model, then the server.

One flag per Settings field (``ring_size`` -> ``--ring-size``); flags override
``RINGBRIDGE_*`` environment variables, which override the settings file,
which overrides the defaults -- and only the flags actually given override.
"""

from __future__ import annotations

import argparse
import typing
from pathlib import Path
from typing import Any, Literal

from .. import units
from ..errors import RingbridgeError
from .common import EXIT_USAGE, fail


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field (``ring_size`` -> ``--ring-size``), plus ``--config``.

    The flags carry strings (or booleans) and Settings parses them, exactly as
    it parses the environment and the settings file: one source of truth.
    Flags default to SUPPRESS so that only the flags given override the
    environment (RINGBRIDGE_*), the settings file and the defaults.
    """
    from ..settings import CONFIG_ENV, Settings

    parser.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="FILE",
        help=f"TOML settings file (env {CONFIG_ENV}); flags and env override it",
    )
    for name, info in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = f"RINGBRIDGE_{name.upper()}"
        default = info.default
        shown = "none" if default is None else default
        if info.default_factory is not None:
            shown = "none"
        help_text = f"{info.description or name} (env {env}; default {shown})"
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        ann = info.annotation
        if ann is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(ann) in (list, dict):
            # Repeatable: each use appends one item; Settings parses the list.
            kw["action"] = "append"
            item = typing.get_args(ann)[:1]
            extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
            kw["metavar"] = (
                str(extra["metavar"])
                if "metavar" in extra
                else "NAME=SIZE"
                if typing.get_origin(ann) is dict
                else "PATH"
                if item == (Path,)
                else "NAME"
            )
        else:
            choices = typing.get_args(ann) if typing.get_origin(ann) is Literal else None
            if choices:
                kw["choices"] = choices
            if not choices:
                kw["metavar"] = _metavar(info)
        parser.add_argument(flag, **kw)


def _metavar(info: Any) -> str:
    args = [a for a in typing.get_args(info.annotation) if a is not type(None)]
    extras = [*info.metadata, *(m for a in args for m in getattr(a, "__metadata__", ()))]
    if any(getattr(m, "func", None) is units.parse_size for m in extras):
        return "SIZE"
    ann = args[0] if args else info.annotation
    names = {int: "N", float: "SECONDS", Path: "PATH", str: "TEXT"}
    return names.get(ann, "VALUE")


def settings_from_args(args: argparse.Namespace) -> Any:
    """A Settings from the flags given (the rest from env, the settings file, defaults)."""
    from ..settings import Settings

    overrides = {name: getattr(args, name) for name in Settings.model_fields if name in args}
    return Settings.load(overrides, getattr(args, "config", None))


def cmd_serve(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        return fail(f"invalid settings: {problems}", EXIT_USAGE)
    except RingbridgeError as exc:
        return fail(f"invalid settings: {exc.message}", EXIT_USAGE)
    from ..api.server import run

    return run(settings)
