"""Connections: a deadline for request headers, and a cap below the fd limit.

uvicorn bounds the idle time *between* requests (keep-alive, 5 s) but not
the time a client takes to send a request's line and headers, nor the
number of connections. A client that sends a partial request line, or one
header byte every few seconds (slowloris), held its connection for as long
as it liked; a few hundred such connections took every file descriptor and
every other client got "disconnected without response", with nothing logged.

- **Header deadline.** A connection has ``header_timeout`` seconds from its
  opening, and a kept-alive one from the first byte of each next request,
  to complete the request's headers. Past it the connection is closed: with
  a 408 (the usual error body) when a request had begun, silently when
  nothing arrived. A request whose headers are complete is the app's (its
  body has ``body_timeout``); a pipelined request waiting behind one in
  progress is not cut.
- **Connection cap.** At most ``limit`` connections (HTTP and WebSocket) are
  open; the limit is kept below the fd limit with room for the service's own
  fds and the accept backlog (a burst of accepts happens before the first
  connection is looked at). A connection beyond the limit closes, instead,
  the one that has waited longest without a request in progress -- idle
  between requests first, then waiting for its headers -- so that normal
  clients are served while slow ones hold connections; when every
  connection is busy the newcomer gets ``503 overloaded`` + ``Retry-After``
  at once, before anything of its request is read.

Every such close is counted by reason (``ringbridge_connections_closed_total``)
and logged, at most once per second, with the counts since the last line.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, Final, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from .. import wire
from ..errors import OverloadedError, RequestTimeoutError, RingbridgeError
from .keepalive import bytes_waiting

log = logging.getLogger("ringbridge.connections")

#: The connection cap when none is configured (lowered to fit the fd limit).
DEFAULT_MAX_CONNECTIONS: Final = 16_384
#: File descriptors left free beyond those open at start-up, the connections
#: and the accept backlog: for what the service opens while it runs.
FD_MARGIN: Final = 32
#: Close reasons, the label values of ringbridge_connections_closed_total.
REASONS: Final = ("header_timeout", "limit_evicted", "limit_refused")
#: At most one log line per this many seconds about closed connections.
LOG_EVERY: Final = 1.0


def raise_fd_limit() -> tuple[int, int]:
    """Raises the soft RLIMIT_NOFILE to the hard one (always allowed); returns both."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:  # e.g. a hard limit above fs.nr_open
            log.warning(
                "cannot raise the fd limit", extra={"soft": soft, "hard": hard, "error": str(exc)}
            )
    return soft, hard


def fd_limit() -> int:
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64  # no /proc: a guess on the safe side


def backlog_for(nofile: int) -> int:
    """The listen backlog: uvicorn's 2048 where fds are plenty, an eighth of them else.

    Every connection the kernel queued is accepted (an fd) before the first
    one is looked at, so the backlog is part of the fd budget.
    """
    return max(16, min(2048, nofile // 8))


def _response(exc: RingbridgeError, retry_after: int) -> bytes:
    """A whole HTTP answer for ``exc``, written before closing (no app is involved)."""
    status = wire.rule(exc.code).status
    body = wire.error_json(wire.ErrorInfo.of(exc))
    head = [
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}",
        "content-type: application/json",
        f"content-length: {len(body)}",
        "connection: close",
        *(f"{k.lower()}: {v}" for k, v in wire.error_headers(exc.code, retry_after).items()),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class _Waiting:
    """A connection without a request in progress: since when, and whether one began."""

    since: float
    began: bool


class ConnectionGuard:
    """One server's header deadlines, connection cap and counts (see the module docstring)."""

    def __init__(
        self,
        connections: set[Any],
        *,
        max_connections: int | None,
        header_timeout: float,
        retry_after: int,
    ) -> None:
        self._connections = connections  # uvicorn's: every open protocol, HTTP or WebSocket
        self.wanted = max_connections
        self.limit = max_connections if max_connections is not None else DEFAULT_MAX_CONNECTIONS
        self.header_timeout = header_timeout
        self.retry_after = retry_after
        self.closed = dict.fromkeys(REASONS, 0)
        # Insertion order is age order: the oldest are first.
        self._waiting: dict[Guarded, _Waiting] = {}
        self._idle: dict[Guarded, None] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._logged = dict(self.closed)
        self._logged_at = 0.0
        self._timeout_response = _response(
            RequestTimeoutError(
                f"request headers not received within {header_timeout:g} s (header_timeout)"
            ),
            retry_after,
        )
        self._refusal = b""

    # -- the server's side --------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, backlog: int) -> None:
        """Fits the limit to the fds left now (everything is loaded) and starts sweeping."""
        room = fd_limit() - open_fds() - backlog - FD_MARGIN
        wanted = self.wanted if self.wanted is not None else DEFAULT_MAX_CONNECTIONS
        self.limit = max(1, min(wanted, room))
        if self.wanted is not None and self.limit < self.wanted:
            log.warning(
                "max_connections lowered to fit the fd limit",
                extra={"max_connections": self.wanted, "limit": self.limit,
                       "fd_limit": fd_limit(), "hint": "raise the fd limit (ulimit -n, "
                       "LimitNOFILE=, docker --ulimit nofile=)"},
            )  # fmt: skip
        self._refusal = _response(
            OverloadedError(f"connection limit reached ({self.limit} open): try again later"),
            self.retry_after,
        )
        log.info(
            "connections",
            extra={"limit": self.limit, "fd_limit": fd_limit(), "backlog": backlog,
                   "header_timeout": self.header_timeout},
        )  # fmt: skip
        self._loop = loop
        self._arm()

    def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._log_closed(force=True)

    def statistics(self) -> tuple[int, int, dict[str, int]]:
        """(open connections, limit, closed by reason)."""
        return len(self._connections), self.limit, dict(self.closed)

    # -- the protocols' side ------------------------------------------------------------

    def opened(self, proto: Guarded) -> None:
        self._waiting[proto] = _Waiting(proto.loop.time(), False)
        if len(self._connections) <= self.limit:
            return
        # The oldest idle one, else the oldest waiting for headers (never proto,
        # the youngest: it is last).
        victim = next(iter(self._idle), None) or next(iter(self._waiting))
        if victim is not proto:
            self._close(victim, "limit_evicted")
            return
        self.closed["limit_refused"] += 1
        self._forget(proto)
        proto.transport.write(self._refusal)
        proto.transport.close()

    def request_began(self, proto: Guarded) -> None:
        self._idle.pop(proto, None)
        waiting = self._waiting.get(proto)
        if waiting is None:
            self._waiting[proto] = _Waiting(proto.loop.time(), True)
        else:
            waiting.began = True

    def headers_done(self, proto: Guarded) -> None:
        self._waiting.pop(proto, None)

    def response_done(self, proto: Guarded) -> None:
        # Idle until its next request begins (uvicorn's keep-alive timer runs),
        # unless a pipelined request started or the connection is closing.
        idle = not proto.request_in_progress() and not proto.transport.is_closing()
        if idle and proto not in self._waiting:
            self._idle[proto] = None

    def _forget(self, proto: Guarded) -> None:
        self._waiting.pop(proto, None)
        self._idle.pop(proto, None)

    def lost(self, proto: Guarded) -> None:
        self._forget(proto)

    # -- closing ------------------------------------------------------------------------

    def _close(self, proto: Guarded, reason: str) -> None:
        waiting = self._waiting.get(proto)
        self._forget(proto)
        self.closed[reason] += 1
        transport = proto.transport
        if transport.is_closing():
            return
        if waiting is not None and waiting.began:
            transport.write(self._timeout_response)
        transport.close()

    def _busy(self, proto: Guarded) -> bool:
        # A request in progress (the next one's headers wait behind it, unread).
        return proto.request_in_progress()

    def _arm(self) -> None:
        assert self._loop is not None
        period = min(1.0, self.header_timeout / 4)
        self._sweeper = self._loop.call_later(period, self._sweep)

    def _sweep(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        due = now - self.header_timeout
        expired = []
        for proto, waiting in self._waiting.items():
            if waiting.since > due:
                break
            expired.append(proto)
        for proto in expired:
            if self._busy(proto):
                # A pipelined request, unread behind the one in progress: its
                # time starts again (it cannot send while it is not read).
                self._waiting[proto] = _Waiting(now, self._waiting.pop(proto).began)
            else:
                self._close(proto, "header_timeout")
        self._log_closed()
        self._arm()

    def _log_closed(self, *, force: bool = False) -> None:
        now = self._loop.time() if self._loop is not None else 0.0
        if self.closed == self._logged or (not force and now - self._logged_at < LOG_EVERY):
            return
        delta = {k: self.closed[k] - self._logged[k] for k in REASONS}
        self._logged, self._logged_at = dict(self.closed), now
        log.warning(
            "connections closed",
            extra={**delta, "open": len(self._connections), "limit": self.limit,
                   "header_timeout_s": self.header_timeout},
        )  # fmt: skip


_GUARDS: weakref.WeakKeyDictionary[ServerState, ConnectionGuard] = weakref.WeakKeyDictionary()


def install(
    server_state: ServerState,
    *,
    max_connections: int | None,
    header_timeout: float,
    retry_after: int,
) -> ConnectionGuard:
    """A guard for the server whose state this is, which its protocols find."""
    guard = ConnectionGuard(
        server_state.connections,
        max_connections=max_connections,
        header_timeout=header_timeout,
        retry_after=retry_after,
    )
    _GUARDS[server_state] = guard
    return guard


def guard_of(server_state: ServerState) -> ConnectionGuard | None:
    """The guard installed for the server whose state this is, if any."""
    return _GUARDS.get(server_state)


class Guarded(Protocol):
    """A connection the guard looks after: uvicorn's HTTP protocol under
    :class:`GuardedHttpProtocol`, or the data plane's
    (:class:`ringbridge.api.dataplane.DataPlaneProtocol`)."""

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop

    def request_in_progress(self) -> bool:
        """A request is being read or answered (a pipelined one may wait behind it)."""
        ...


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol reporting to its server's :class:`ConnectionGuard`:
    the protocol the data plane hands the requests it does not serve to. Its
    hooks are httptools' parser callbacks uvicorn implements (checked by
    tests/service/test_uvicorn_private.py). A server without a guard
    installed runs unguarded.
    """

    _guard: ConnectionGuard | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._guard = _GUARDS.get(self.server_state)
        if self._guard is not None:
            self._guard.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._guard is not None:
            self._guard.lost(self)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._guard is not None:
            self._guard.request_began(self)

    def on_headers_complete(self) -> None:
        if self._guard is not None:
            self._guard.headers_done(self)
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self._guard is not None:
            self._guard.response_done(self)

    def request_in_progress(self) -> bool:
        cycle = self.cycle
        return bool(self.pipeline) or (cycle is not None and not cycle.response_complete)

    def timeout_keep_alive_handler(self) -> None:
        if bytes_waiting(self.transport):  # read it, not reset it (api/keepalive.py)
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
            return
        super().timeout_keep_alive_handler()


class ConnectionCollector(Collector):
    """The guard's numbers on ``/metrics``."""

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard

    def collect(self) -> Iterator[Metric]:
        open_, limit, closed = self._guard.statistics()
        yield GaugeMetricFamily(
            "ringbridge_connections_open", "Connections open now (HTTP and WebSocket).",
            value=open_,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "ringbridge_connections_limit",
            "Most connections open at once (max_connections, fitted to the fd limit).",
            value=limit,
        )
        family = CounterMetricFamily(
            "ringbridge_connections_closed",
            "Connections the service closed: header_timeout (request headers not "
            "received in time), limit_evicted (closed to make room at the limit), "
            "limit_refused (503 at the limit, nothing to evict).",
            labels=["reason"],
        )
        for reason in REASONS:
            family.add_metric([reason], closed[reason])
        yield family
