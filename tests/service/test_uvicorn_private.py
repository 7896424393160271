"""What ringbridge relies on in uvicorn beyond its public API, checked on the installed uvicorn.

The data plane (``api/dataplane``) is the protocol uvicorn runs
(``uvicorn.Config(http=..., ws=...)``, public): it subclasses nothing of
uvicorn's. What it still relies on is how uvicorn builds and hands over its
protocols -- the constructor uvicorn calls for each, the hand-over of a
connection (``connection_made``, ``data_received``, then
``transport.set_protocol``, as uvicorn's own WebSocket upgrade does), the
server's state (its set of open connections, its default headers) and the
few config attributes it reads. ``api/connguard.py`` (the header deadline and
connection cap) subclasses ``HttpToolsProtocol``, the protocol requests the
data plane does not serve are handed to: it hooks the parser callbacks and
reads the request cycle. ``api/server.py`` subclasses ``uvicorn.Server`` for
its shutdown order. None of that is promised by uvicorn, so pyproject.toml
pins uvicorn below the next minor version. This test lists every such
dependency and fails naming each one that changed; when it does, read that
part of uvicorn's new source, adapt the code, re-run tests/service/test_http.py,
test_ws.py and test_dataplane.py, and only then widen the pin.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from ringbridge.api import connguard, server
from ringbridge.api.dataplane import DataPlaneProtocol

HTTP = "uvicorn.protocols.http.httptools_impl"
WS = "uvicorn.protocols.websockets.websockets_sansio_impl"

#: Names ringbridge imports from uvicorn's private modules.
IMPORTS = {
    HTTP: ("HttpToolsProtocol",),
    WS: ("WebSocketsSansIOProtocol",),
    "uvicorn.protocols.utils": ("get_remote_addr",),
    "uvicorn.server": ("ServerState",),
}

#: (module, class, method) -> (parameters, async?): the methods overridden or called.
METHODS: dict[tuple[str, str, str], tuple[tuple[str, ...], bool]] = {
    # Built by the data plane to hand a connection over (as uvicorn builds them).
    (HTTP, "HttpToolsProtocol", "__init__"): (
        ("self", "config", "server_state", "app_state", "_loop"),
        False,
    ),
    (WS, "WebSocketsSansIOProtocol", "__init__"): (
        ("self", "config", "server_state", "app_state", "_loop"),
        False,
    ),
    (HTTP, "HttpToolsProtocol", "connection_made"): (("self", "transport"), False),
    (HTTP, "HttpToolsProtocol", "data_received"): (("self", "data"), False),
    (WS, "WebSocketsSansIOProtocol", "connection_made"): (("self", "transport"), False),
    (WS, "WebSocketsSansIOProtocol", "data_received"): (("self", "data"), False),
    # api/connguard.py's GuardedHttpProtocol (the connection guard):
    (HTTP, "HttpToolsProtocol", "connection_lost"): (("self", "exc"), False),
    (HTTP, "HttpToolsProtocol", "on_message_begin"): (("self",), False),
    (HTTP, "HttpToolsProtocol", "on_headers_complete"): (("self",), False),
    (HTTP, "HttpToolsProtocol", "on_response_complete"): (("self",), False),
    # ... and its keep-alive rule (api/keepalive.py).
    (HTTP, "HttpToolsProtocol", "timeout_keep_alive_handler"): (("self",), False),
    ("uvicorn.server", "Server", "__init__"): (("self", "config"), False),
    ("uvicorn.server", "Server", "startup"): (("self", "sockets"), True),
    ("uvicorn.server", "Server", "shutdown"): (("self", "sockets"), True),
    ("uvicorn.server", "Server", "run"): (("self", "sockets"), False),
}

#: (module, class, method) -> source fragments it must still contain.
SOURCE = {
    # uvicorn builds its protocols with these keywords, and calls the data
    # plane's shutdown() on every connection it knows when it stops.
    ("uvicorn.server", "Server", "startup"): (
        "config=config",
        "server_state=self.server_state",
        "app_state=self.lifespan.state",
        "backlog=config.backlog",
    ),
    ("uvicorn.server", "Server", "shutdown"): ("connection.shutdown()",),
    # The hand-over pattern the data plane copies, and the upgrade that
    # builds the data plane as the WebSocket protocol (config.ws).
    (HTTP, "HttpToolsProtocol", "handle_websocket_upgrade"): (
        "self.ws_protocol_class(",
        "protocol.connection_made(self.transport)",
        "protocol.data_received(",
        "self.transport.set_protocol(protocol)",
        "self.connections.discard(self)",
    ),
    # The guard counts uvicorn's set of open connections (WebSockets join it
    # on the upgrade) and learns of a response's end through the cycle's hook.
    (HTTP, "HttpToolsProtocol", "connection_made"): ("self.connections.add(self)",),
    (HTTP, "HttpToolsProtocol", "on_headers_complete"): (
        "on_response=self.on_response_complete",
        "self.pipeline.appendleft(",
    ),
    (WS, "WebSocketsSansIOProtocol", "connection_made"): ("self.connections.add(self)",),
    # The keep-alive timer: armed under this name, cancelled when data arrives.
    (HTTP, "HttpToolsProtocol", "on_response_complete"): (
        "self.timeout_keep_alive_task = self.loop.call_later(",
        "self.timeout_keep_alive, self.timeout_keep_alive_handler",
    ),
    (HTTP, "HttpToolsProtocol", "data_received"): ("self._unset_keepalive_if_required()",),
}

#: Instance attributes read or written, per class.
ATTRIBUTES = {
    "HttpToolsProtocol": (
        "cycle",
        "loop",
        "pipeline",
        "server_state",
        "connections",
        "transport",
        "timeout_keep_alive",
        "timeout_keep_alive_task",
    ),
    "ServerState": ("connections", "default_headers"),
    "Config": (
        "loaded",
        "timeout_keep_alive",
        "ws_protocol_class",
        "ws_ping_interval",
        "ws_ping_timeout",
        "backlog",
    ),
}


def _lookup(module: str, cls: str, name: str | None = None) -> Any:
    obj = getattr(importlib.import_module(module), cls)
    return obj if name is None else inspect.getattr_static(obj, name)


def _config() -> uvicorn.Config:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    config = uvicorn.Config(app, ws_max_size=1 << 20)
    config.load()
    return config


def _instance(cls: str) -> Any:
    if cls == "ServerState":
        return ServerState()
    if cls == "Config":
        return _config()
    loop = asyncio.new_event_loop()
    try:
        return _lookup(HTTP, cls)(_config(), ServerState(), {}, _loop=loop)
    finally:
        loop.close()


def private_api_changes() -> list[str]:
    """Every dependency that the installed uvicorn no longer meets."""
    checks: list[tuple[str, Callable[..., str | None], tuple[Any, ...]]] = []
    for module, names in IMPORTS.items():
        checks += [(f"{module}.{name}", _exists, (module, name)) for name in names]
    for key, (params, is_async) in METHODS.items():
        checks.append((f"{key[1]}.{key[2]}", _method, (key, params, is_async)))
    for key, fragments in SOURCE.items():
        checks.append((f"{key[1]}.{key[2]}", _source, (key, fragments)))
    for cls, attrs in ATTRIBUTES.items():
        checks.append((f"{cls} instances", _attributes, (cls, attrs)))
    found = []
    for what, check, args in checks:
        try:
            problem = check(*args)
        except Exception as exc:  # each failure is reported, not raised
            problem = f"{type(exc).__name__}: {exc}"
        if problem:
            found.append(f"{what}: {problem}")
    return found


def _exists(module: str, name: str) -> str | None:
    mod = importlib.import_module(module)
    return None if hasattr(mod, name) else "no longer defined"


def _method(key: tuple[str, str, str], params: tuple[str, ...], is_async: bool) -> str | None:
    fn = _lookup(*key)
    got = tuple(inspect.signature(fn).parameters)
    if got != params:
        return f"parameters are now {got}, ringbridge relies on {params}"
    if inspect.iscoroutinefunction(fn) != is_async:
        return f"is {'no longer' if is_async else 'now'} a coroutine function"
    return None


def _source(key: tuple[str, str, str], fragments: tuple[str, ...]) -> str | None:
    text = inspect.getsource(_lookup(*key))
    missing = [f for f in fragments if f not in text]
    return f"no longer contains {missing}" if missing else None


def _attributes(cls: str, attrs: tuple[str, ...]) -> str | None:
    instance = _instance(cls)
    missing = [a for a in attrs if not hasattr(instance, a)]
    return f"no longer have {missing}" if missing else None


def test_the_installed_uvicorn_has_what_ringbridge_relies_on() -> None:
    changes = private_api_changes()
    assert not changes, (
        f"uvicorn {uvicorn.__version__} changed what ringbridge relies on "
        "(see this module's docstring):\n  " + "\n  ".join(changes)
    )


def test_only_the_classes_checked_here_are_subclassed() -> None:
    # The data plane is an asyncio protocol of its own: nothing of uvicorn's.
    assert asyncio.BufferedProtocol in DataPlaneProtocol.__mro__
    assert all(not c.__module__.startswith("uvicorn") for c in DataPlaneProtocol.__mro__)
    assert issubclass(server.RingbridgeServer, uvicorn.Server)
    assert issubclass(connguard.GuardedHttpProtocol, _lookup(HTTP, "HttpToolsProtocol"))
    # Every method overridden is in METHODS, so a rename upstream is caught.
    checked = {(cls, name) for _, cls, name in METHODS}
    for ours, base in (
        (server.RingbridgeServer, "Server"),
        (connguard.GuardedHttpProtocol, "HttpToolsProtocol"),
    ):
        parent = ours.__mro__[1]
        overridden = {
            name
            for name, value in vars(ours).items()
            if inspect.isfunction(value) and hasattr(parent, name)
        }
        assert overridden, ours
        assert overridden <= {name for cls, name in checked if cls == base}, (ours, overridden)


def test_a_change_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    http = _lookup(HTTP, "HttpToolsProtocol")
    monkeypatch.delattr(http, "on_message_begin")

    def data_received(self: Any, chunk: bytes) -> None:
        pass

    monkeypatch.setattr(http, "data_received", data_received)
    changes = private_api_changes()
    assert "HttpToolsProtocol.on_message_begin: AttributeError: on_message_begin" in changes
    assert (
        "HttpToolsProtocol.data_received: parameters are now ('self', 'chunk'), "
        "ringbridge relies on ('self', 'data')" in changes
    )
