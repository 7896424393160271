"""ringbridge: bridge network clients into a Linux BPF user ring buffer.

The client API is importable from the top level (``from ringbridge import
Client``); it is loaded on first use, so that the service, the CLI and the
kernel layers do not pay for httpx and websockets they may not need.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import Ack, AsyncClient, Client, Sample

try:
    __version__ = version("ringbridge")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_CLIENT_NAMES = frozenset({"Ack", "AsyncClient", "Client", "Sample"})

__all__ = ["Ack", "AsyncClient", "Client", "Sample", "__version__"]


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from . import client

        return getattr(client, name)
    raise AttributeError(f"module 'ringbridge' has no attribute {name!r}")
