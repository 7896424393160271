"""What ``api/server.py`` relies on in uvicorn's private code, checked on the installed uvicorn.

server.py subclasses ``HttpToolsProtocol`` and ``WebSocketsSansIOProtocol``
(and ``uvicorn.Server``): it overrides hooks uvicorn calls by name, reads the
protocols' attributes and swaps the request cycle's ``body`` buffer for its
own. ``api/connguard.py`` (the header deadline and connection cap) hooks the
HTTP protocol's connection and request events and counts uvicorn's set of
open connections. None of that is uvicorn's public API, so pyproject.toml pins uvicorn
below the next minor version. An upgrade may rename a hook (the override is
then silently never called: the pong bound or the shutdown acks are lost), drop
an attribute (an AttributeError mid-request) or change how the body buffer is
used (the copy the override removes comes back, or the body breaks). This test
lists every such dependency and fails naming each one that changed; when it
does, read that part of uvicorn's new source, adapt server.py, re-run
tests/service/test_http.py and test_ws.py, and only then widen the pin.
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

HTTP = "uvicorn.protocols.http.httptools_impl"
WS = "uvicorn.protocols.websockets.websockets_sansio_impl"

#: Names server.py imports from uvicorn's private modules.
IMPORTS = {
    "uvicorn._types": ("ASGIReceiveEvent", "ASGISendEvent"),
    HTTP: ("HttpToolsProtocol", "RequestResponseCycle"),
    "uvicorn.protocols.utils": ("ClientDisconnected",),
    WS: ("WebSocketsSansIOProtocol",),
}

#: (module, class, method) -> (parameters, async?): the methods server.py overrides or calls.
METHODS: dict[tuple[str, str, str], tuple[tuple[str, ...], bool]] = {
    (HTTP, "HttpToolsProtocol", "on_headers_complete"): (("self",), False),
    (HTTP, "HttpToolsProtocol", "on_body"): (("self", "body"), False),
    # api/connguard.py's GuardedHttpProtocol (the connection guard):
    (HTTP, "HttpToolsProtocol", "connection_made"): (("self", "transport"), False),
    (HTTP, "HttpToolsProtocol", "connection_lost"): (("self", "exc"), False),
    (HTTP, "HttpToolsProtocol", "on_message_begin"): (("self",), False),
    (HTTP, "HttpToolsProtocol", "on_response_complete"): (("self",), False),
    (WS, "WebSocketsSansIOProtocol", "send_receive_event_to_app"): (("self",), False),
    (WS, "WebSocketsSansIOProtocol", "receive"): (("self",), True),
    (WS, "WebSocketsSansIOProtocol", "send"): (("self", "message"), True),
    (WS, "WebSocketsSansIOProtocol", "handle_ping"): (("self",), False),
    (WS, "WebSocketsSansIOProtocol", "shutdown"): (("self",), False),
    ("uvicorn.server", "Server", "__init__"): (("self", "config"), False),
    ("uvicorn.server", "Server", "startup"): (("self", "sockets"), True),
    ("uvicorn.server", "Server", "shutdown"): (("self", "sockets"), True),
    ("uvicorn.server", "Server", "run"): (("self", "sockets"), False),
}

#: (module, class, method) -> source fragments it must still contain: uvicorn
#: calls the hooks server.py overrides, and uses the body buffer the way
#: ``_BodyChunks`` stands in for (``+=``, ``len()``, ``bytes()``).
SOURCE = {
    (HTTP, "HttpToolsProtocol", "__init__"): ("httptools.HttpRequestParser(self)",),
    (HTTP, "HttpToolsProtocol", "on_body"): ("self.cycle.body += body", "len(self.cycle.body)"),
    # The guard counts uvicorn's set of open connections (WebSockets join it
    # on the upgrade) and learns of a response's end through the cycle's hook.
    (HTTP, "HttpToolsProtocol", "connection_made"): ("self.connections.add(self)",),
    (HTTP, "HttpToolsProtocol", "on_headers_complete"): (
        "on_response=self.on_response_complete",
        "self.pipeline.appendleft(",
    ),
    (WS, "WebSocketsSansIOProtocol", "connection_made"): ("self.connections.add(self)",),
    ("uvicorn.server", "Server", "startup"): ("backlog=config.backlog",),
    (HTTP, "RequestResponseCycle", "__init__"): (
        "self.body = bytearray()",
        "self.transport = transport",
    ),
    (HTTP, "RequestResponseCycle", "receive"): ('"body": bytes(self.body)',),
    (WS, "WebSocketsSansIOProtocol", "handle_events"): ("self.handle_ping()",),
    (WS, "WebSocketsSansIOProtocol", "handle_text"): ("self.send_receive_event_to_app()",),
    (WS, "WebSocketsSansIOProtocol", "handle_bytes"): ("self.send_receive_event_to_app()",),
    (WS, "WebSocketsSansIOProtocol", "send_receive_event_to_app"): (
        "self.frames = []",
        "self.queue.put_nowait(",
        "self.read_paused = True",
    ),
    (WS, "WebSocketsSansIOProtocol", "receive"): ("await self.queue.get()",),
    ("uvicorn.server", "Server", "shutdown"): ("connection.shutdown()",),
}

#: Instance attributes server.py reads or writes, per protocol class.
ATTRIBUTES = {
    "HttpToolsProtocol": ("cycle", "loop", "pipeline", "server_state", "connections"),
    "WebSocketsSansIOProtocol": (
        "frames",
        "read_paused",
        "queue",
        "handshake_complete",
        "writable",
        "disconnected",
        "close_sent",
        "initial_response",
        "conn",
        "loop",
        "config",
        "transport",
    ),
}


def _lookup(module: str, cls: str, name: str | None = None) -> Any:
    obj = getattr(importlib.import_module(module), cls)
    return obj if name is None else inspect.getattr_static(obj, name)


def _protocol(cls: type) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        pass

    config = uvicorn.Config(app, ws_max_size=1 << 20)
    config.load()
    loop = asyncio.new_event_loop()
    try:
        return cls(config, ServerState(), {}, _loop=loop)
    finally:
        loop.close()


def private_api_changes() -> list[str]:
    """Every dependency of server.py that the installed uvicorn no longer meets."""
    checks: list[tuple[str, Callable[..., str | None], tuple[Any, ...]]] = []
    for module, names in IMPORTS.items():
        checks += [(f"{module}.{name}", _exists, (module, name)) for name in names]
    for key, (params, is_async) in METHODS.items():
        checks.append((f"{key[1]}.{key[2]}", _method, (key, params, is_async)))
    for key, fragments in SOURCE.items():
        checks.append((f"{key[1]}.{key[2]}", _source, (key, fragments)))
    for cls, attrs in ATTRIBUTES.items():
        module = HTTP if cls == "HttpToolsProtocol" else WS
        checks.append((f"{cls} instances", _attributes, (module, cls, attrs)))
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
        return f"parameters are now {got}, server.py relies on {params}"
    if inspect.iscoroutinefunction(fn) != is_async:
        return f"is {'no longer' if is_async else 'now'} a coroutine function"
    return None


def _source(key: tuple[str, str, str], fragments: tuple[str, ...]) -> str | None:
    text = inspect.getsource(_lookup(*key))
    missing = [f for f in fragments if f not in text]
    return f"no longer contains {missing}" if missing else None


def _attributes(module: str, cls: str, attrs: tuple[str, ...]) -> str | None:
    instance = _protocol(_lookup(module, cls))
    missing = [a for a in attrs if not hasattr(instance, a)]
    return f"no longer have {missing}" if missing else None


def test_the_installed_uvicorn_has_what_server_py_relies_on() -> None:
    changes = private_api_changes()
    assert not changes, (
        f"uvicorn {uvicorn.__version__} changed what ringbridge/api/server.py relies on "
        "(see this module's docstring):\n  " + "\n  ".join(changes)
    )


def test_server_py_subclasses_the_classes_checked_here() -> None:
    assert issubclass(server.RingbridgeHttpProtocol, _lookup(HTTP, "HttpToolsProtocol"))
    assert issubclass(server.RingbridgeWSProtocol, _lookup(WS, "WebSocketsSansIOProtocol"))
    assert issubclass(server.RingbridgeServer, uvicorn.Server)
    assert server.ServedHttpProtocol.__mro__[1:3] == (
        connguard.GuardedHttpProtocol,
        server.RingbridgeHttpProtocol,
    )
    assert hasattr(ServerState(), "connections")
    # Every method server.py overrides is in METHODS, so a rename upstream is caught.
    checked = {(cls, name) for _, cls, name in METHODS}
    for ours, base in (
        (server.RingbridgeHttpProtocol, "HttpToolsProtocol"),
        (server.RingbridgeWSProtocol, "WebSocketsSansIOProtocol"),
        (server.RingbridgeServer, "Server"),
        (connguard.GuardedHttpProtocol, "HttpToolsProtocol"),
    ):
        parent = ours.__mro__[1]
        overridden = {
            name
            for name, value in vars(ours).items()
            if inspect.isfunction(value) and hasattr(parent, name)
        }
        overridden.discard("__getattr__")
        assert overridden, ours
        assert overridden <= {name for cls, name in checked if cls == base}, (ours, overridden)


def test_a_change_is_reported_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    ws = _lookup(WS, "WebSocketsSansIOProtocol")
    monkeypatch.delattr(ws, "handle_ping")

    def on_body(self: Any, chunk: bytes) -> None:
        self.cycle.body = self.cycle.body + chunk

    monkeypatch.setattr(_lookup(HTTP, "HttpToolsProtocol"), "on_body", on_body)
    changes = private_api_changes()
    assert "WebSocketsSansIOProtocol.handle_ping: AttributeError: handle_ping" in changes
    assert (
        "HttpToolsProtocol.on_body: parameters are now ('self', 'chunk'), "
        "server.py relies on ('self', 'body')" in changes
    )
    assert (
        "HttpToolsProtocol.on_body: no longer contains "
        "['self.cycle.body += body', 'len(self.cycle.body)']" in changes
    )
