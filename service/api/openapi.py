"""The OpenAPI description of ``POST /v1/samples`` and ``GET /v1/events``, from the wire contract.

The route's one handler (:func:`ringbridge.api.fastpath.post_samples`) runs
ahead of FastAPI, so FastAPI cannot read its parameters off a signature:
its query, body and answers are described here -- the query's values from
:data:`ringbridge.wire.WAITS`, each error status with the codes that
:data:`ringbridge.wire.RULES` gives it (and ``Retry-After`` where the rule
says "retry").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from .. import wire
from ..schema.kinds.base import BASE64_PATTERN


class SamplesAck(BaseModel):
    """Documentation of the 200 body (:func:`ringbridge.wire.ack_json` writes it)."""

    accepted: int
    first_seq: int
    last_seq: int
    state: wire.WaitFor


class ErrorDetail(BaseModel):
    code: str
    message: str
    index: int | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_docs(keep: Callable[[wire.Rule], bool]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses: each status that ``keep`` selects, with its codes and causes."""
    causes: dict[int, list[str]] = {}
    retry: set[int] = set()
    for code, r in wire.RULES.items():
        if keep(r):
            causes.setdefault(r.status, []).append(f"`{code}`: {r.doc}")
            if r.retry:
                retry.add(r.status)
    docs: dict[int | str, dict[str, Any]] = {}
    for status in sorted(causes):
        doc: dict[str, Any] = {"model": ErrorBody, "description": "\n\n".join(causes[status])}
        if status in retry:
            doc["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait; nothing of the batch was committed, "
                    "sending it again is safe",
                    "schema": {"type": "integer"},
                }
            }
        docs[status] = doc
    return docs


# What a batch can be refused with: the client's faults (4xx; not 499, which
# nobody receives) and "retry later". Internal errors (500) are not a contract.
SAMPLES_ERRORS = error_docs(lambda r: r.retry or (400 <= r.status < 500 and r.status != 499))
AUTH_ERRORS = error_docs(lambda r: r.status in (401, 403))
# What a subscription to an event map can be refused with.
EVENTS_ERRORS = error_docs(
    lambda r: (
        r.status in (401, 403, 404) or r in (wire.RULES["invalid_request"], wire.RULES["stopping"])
    )
)

EVENTS_OPERATION = {
    "parameters": [
        {
            "name": "map",
            "in": "query",
            "required": True,
            "description": "the event map to read: an --event-map NAME, or the file name "
            "of an --event-pin PATH",
            "schema": {"type": "string", "minLength": 1},
        },
        {
            "name": "format",
            "in": "query",
            "required": False,
            "description": "`json`, the only format of Server-Sent Events; `binary` (422 "
            "here) is for the WebSocket upgrade of this path: one binary frame per event, "
            "u64 LE seq then the record",
            "schema": {"type": "string", "enum": ["json"], "default": "json"},
        },
    ]
}

QUERY = [
    {
        "name": "wait",
        "in": "query",
        "required": False,
        "description": "answer once the batch is committed, or once the kernel consumed it",
        "schema": {"type": "string", "enum": list(wire.WAITS), "default": "committed"},
    },
    {
        "name": "timeout",
        "in": "query",
        "required": False,
        "description": "seconds the whole request may take from admission: reading the "
        "body, waiting behind other batches, for ring space (and consumption); a finite "
        "number greater than 0 (default and cap: the server's submit_timeout, max_timeout)",
        "schema": {"type": "number", "exclusiveMinimum": 0},
    },
]

KEY_HEADER = {
    "name": wire.IDEMPOTENCY_KEY,
    "in": "header",
    "required": False,
    "description": "the client's own unique name for this batch: sent again under the same "
    "key (after a connection lost with no answer), the batch gets its first ack "
    f"({wire.REPLAYED}: true) and is not committed twice",
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": wire.MAX_KEY_LENGTH,
        "pattern": "^[!-~]+$",
    },
}

SAMPLES_OPERATION = {
    "parameters": [*QUERY, KEY_HEADER],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["samples"],
                    "additionalProperties": False,
                    "properties": {
                        "samples": {
                            "type": "array",
                            # An empty batch is refused (422), so the schema
                            # says so too.
                            "minItems": 1,
                            "items": {
                                "oneOf": [
                                    {
                                        "type": "object",
                                        "required": ["data"],
                                        "properties": {
                                            "data": {
                                                "type": "string",
                                                "format": "byte",
                                                "pattern": BASE64_PATTERN,
                                            }
                                        },
                                    },
                                    {
                                        "type": "object",
                                        "description": "members of the sample type "
                                        "(from the BPF object's BTF; GET /v1/schema has "
                                        "its JSON Schema); missing members are 0",
                                    },
                                ]
                            },
                        }
                    },
                }
            },
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": "records: u32 LE length, u32 zero, payload, zero pad to 8",
            },
        },
    },
}
