"""The Python client of a ringbridge service: ``Client`` (blocking) and ``AsyncClient``.

::

    from ringbridge import Client, Sample

    with Client("http://127.0.0.1:8470", token=None) as c:
        ack = c.send([{"kind": 1, "value": 5}, Sample(kind=2, value=7)], wait="consumed")
        with c.stream(window=16) as s:
            futures = [s.send([Sample(3, i)]) for i in range(100)]
        print([f.result().first_seq for f in futures])
        with c.events("replies") as events:   # a kernel ring buffer (--event-map)
            for item in events:
                print(item)   # {"seq": 0, "value": {...}} or {"lost": N, ...}

This subpackage talks to the service over the network only: it imports
neither the kernel, producer nor API layers (only the shared error
hierarchy, the wire contract :mod:`ringbridge.wire` and the pure ring record
format), so it is cheap to import and usable on hosts without libbpf.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..wire import Ack, WaitFor
    from .clients import AsyncClient, Client
    from .events import AsyncEventStream, EventStream
    from .samples import Sample, SampleLike
    from .stream import AsyncStream, Stream
    from .urls import DEFAULT_URL, ServerURL

#: Where each name lives: loaded on first use, so that importing one light
#: submodule (``ringbridge.client.urls``, which the CLI's common flags use)
#: does not load httpx and websockets into ``ringbridge serve`` (measured:
#: httpx, with the rich/pygments/click of its own CLI, ~4.6 MiB resident).
_WHERE = {
    "Ack": "..wire",
    "WaitFor": "..wire",
    "AsyncClient": ".clients",
    "Client": ".clients",
    "AsyncEventStream": ".events",
    "EventStream": ".events",
    "Sample": ".samples",
    "SampleLike": ".samples",
    "AsyncStream": ".stream",
    "Stream": ".stream",
    "DEFAULT_URL": ".urls",
    "ServerURL": ".urls",
}

__all__ = [
    "DEFAULT_URL",
    "Ack",
    "AsyncClient",
    "AsyncEventStream",
    "AsyncStream",
    "Client",
    "EventStream",
    "Sample",
    "SampleLike",
    "ServerURL",
    "Stream",
    "WaitFor",
]


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(where, __name__), name)
    globals()[name] = value
    return value
