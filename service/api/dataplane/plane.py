"""What every data-plane connection of one server shares: :class:`Plane`."""

from __future__ import annotations

import logging
from typing import Any, Final

from fastapi import FastAPI
from uvicorn.server import ServerState

from ...runtime import Runtime
from ...schema.binary import InPlace
from ...settings import Settings
from .responses import Answers

__all__ = ["SKIP_BYTES", "STAGE_BYTES", "Plane"]

#: Each connection's staging buffer: request heads, WebSocket frame headers,
#: small frames and the first bytes of large ones (the rest of a large body
#: or frame is received where it goes). A head that outgrows it is not the
#: data plane's (uvicorn answers it).
STAGE_BYTES: Final = 16 * 1024
#: Bytes of a refused frame read at a time into one shared scratch buffer.
SKIP_BYTES: Final = 64 * 1024


class Plane:
    """One server's data plane: settings, answers, the native validator, the app."""

    def __init__(self, app: FastAPI, server_state: ServerState) -> None:
        self.app = app
        self.settings: Settings = app.state.settings
        self.answers = Answers(self.settings.retry_after, server_state)
        self.in_place = InPlace(self.settings.ring_size, self.settings.max_sample_bytes)
        self.skip = memoryview(bytearray(SKIP_BYTES))
        self.access = logging.getLogger("uvicorn.access")

    @property
    def runtime(self) -> Runtime | None:
        """The running service, or None before the lifespan started it / once it stopped."""
        rt: Runtime | None = self.app.state.runtime
        return rt

    def access_log(self, client: Any, method: str, path: str, status: int) -> None:
        """uvicorn's access line, when uvicorn would write one: its format and its
        five arguments, which the structured log handler turns into fields
        (``ringbridge.logs``), as it does uvicorn's own."""
        if self.access.hasHandlers():
            where = f"{client[0]}:{client[1]}" if client else "-"
            self.access.info('%s - "%s %s HTTP/%s" %d', where, method, path, "1.1", status)
