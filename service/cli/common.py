"""What every subcommand shares: exit statuses, argument types, messages, client flags."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from .. import units
from ..client.urls import DEFAULT_URL, TOKEN_ENV, URL_ENV, default_url

EXIT_OK = 0
#: The operation failed: a batch rejected, the server or the kernel refused.
EXIT_FAILED = 1
#: Bad usage or unusable input.
EXIT_USAGE = 2
#: The service could not start.
EXIT_STARTUP = 3

#: Where ``serve`` pins by default (the Settings default; ``$RINGBRIDGE_PIN_DIR`` overrides).
PIN_DIR_ENV = "RINGBRIDGE_PIN_DIR"


def parse_size(text: str) -> int:
    """argparse type for sizes: bytes or a K/M/G suffix (see :mod:`ringbridge.units`)."""
    try:
        return units.parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return n


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )


def fail(message: str, status: int = EXIT_FAILED) -> int:
    print(f"ringbridge: {message}", file=sys.stderr)
    return status


def add_client_flags(parser: argparse.ArgumentParser) -> None:
    """``--url`` (the server's base URL) and ``--token``, with their environment defaults."""
    parser.add_argument(
        "--url",
        default=default_url(),
        metavar="URL",
        help=f"the server's base URL, http[s]://host:port (ws[s]:// accepted too; "
        f"env {URL_ENV}; default {DEFAULT_URL})",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV) or None,
        help=f"bearer token (env {TOKEN_ENV})",
    )


def default_pin_dir() -> Path:
    """The pin dir ``serve`` would use: from $RINGBRIDGE_PIN_DIR, the settings file
    ($RINGBRIDGE_CONFIG) or the default, read the way ``serve`` reads them."""
    from ..errors import RingbridgeError
    from ..settings import Settings

    try:
        return Settings.load().pin_dir
    except (RingbridgeError, ValueError):
        # Settings that serve would refuse for another reason (a public host
        # without a token...) still name a pin dir; take it from where it is.
        env = os.environ.get(PIN_DIR_ENV)
        if env:
            return Path(env)
        default = Settings.model_fields["pin_dir"].default
        assert isinstance(default, Path)
        return default


def add_pin_dir_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pin-dir",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"bpffs dir of the pins, as given to serve (env {PIN_DIR_ENV}; "
        f"default {default_pin_dir()})",
    )
