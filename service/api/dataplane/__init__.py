"""The data plane: ``POST /v1/samples`` and ``WS /v1/stream`` below FastAPI, straight to the ring.

uvicorn (uvloop, httptools) stays the server and FastAPI the control plane;
the connection protocol uvicorn runs is :class:`DataPlaneProtocol`
(``uvicorn.Config(http=..., ws=...)``, see :mod:`ringbridge.api.server`). It
reads each request head itself (httptools) and serves the two ingestion
routes directly; any other request is handed, with its bytes, to uvicorn's
own unmodified protocols (FastAPI: metrics, stats, health, docs, events).

The hot loop runs once per body or frame, never per chunk or per sample:
admission credit is taken when the length is known, ring space is claimed
for a binary batch and the socket's bytes land in it, one native call
validates (and, for a WebSocket frame, unmasks) it in place, and the
producer publishes claimed regions in claim order
(:mod:`ringbridge.producer.regions`), an invalid or abandoned one as a
DISCARD record. JSON bodies go through the native scanner
(:mod:`ringbridge.schema.jsonscan`) into ring records. Acks are written from
preencoded templates.

Modules: :mod:`.connection` (the protocol: buffers, states, hand-off),
:mod:`.head` (request heads), :mod:`.post` (one POST), :mod:`.stream` and
:mod:`.frame` (a WebSocket stream and its frames), :mod:`.wsframes` (frame
headers), :mod:`.responses` (HTTP answers), :mod:`.plane` (what a server's
connections share).
"""

from .connection import DataPlaneProtocol

__all__ = ["DataPlaneProtocol"]
