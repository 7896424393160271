"""The settings of what one client may hold, mixed into ``Settings`` (as the fleet's are).

Kept apart from :mod:`ringbridge.settings` so that model stays readable; the
fields are ordinary Settings fields (a ``serve`` flag, a ``RINGBRIDGE_*``
variable and a settings-file key each). They apply to every path that serves
the WebSocket stream and ``POST /v1/samples`` (the data plane and FastAPI's).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from .settings_types import Seconds, SizeOrOff

__all__ = ["ClientSettings"]


class ClientSettings(BaseModel):
    """Idle WebSockets, connections per peer, idempotency keys remembered (#19)."""

    ws_window: int = Field(default=32, gt=0, description="max un-acked batches per WebSocket")
    # 1 MiB: 16 frames of the largest size read ahead (64 KiB), where 256 KiB
    # (3 of them) cost 4-11% more CPU a frame in per-read work (bench, 2026-12-03).
    ws_readahead_bytes: SizeOrOff = Field(
        default=1024 * 1024,
        ge=0,
        description="ring space a WebSocket may claim past a binary frame for the frames "
        "already waiting behind it, taken in one read (0: one frame a read)",
    )
    ws_idle_timeout: Seconds = Field(
        default=300.0,
        gt=0,
        description="a WebSocket with no frame received and no ack owed for this long is "
        "closed (1001), s",
    )
    ws_max_per_peer: int = Field(
        default=256,
        gt=0,
        description="WebSocket connections one peer address may hold; more are refused (429) "
        "at the handshake",
    )
    idempotency_keys: int = Field(
        default=16384,
        ge=16,
        le=1 << 20,
        description="Idempotency-Key values remembered: a batch sent again under its key is "
        "answered with its first ack while it is among the last N keyed batches committed "
        "(kept with the pins, 64 bytes each)",
    )
