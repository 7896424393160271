"""Liveness and readiness: one rule, read by ``/healthz``, ``/readyz`` and ``/metrics``.

``/readyz`` answers a load balancer now; ``ringbridge_ready`` and
``ringbridge_producer_up`` let Prometheus see the same verdicts over time
(alert rules cannot probe an HTTP route). Both read these functions, so the
probe and the alert never disagree about what "ready" means.

A lost NATS connection (``--nats``) degrades a node, it does not make it
unready: HTTP and WebSocket ingestion do not need NATS, and a load balancer
that took the node out would stop them too, while JetStream keeps the
node's messages until it reconnects. So ``nats_connected`` is reported in
``checks`` and listed under ``degraded`` (``/readyz`` still answers 200,
``"status": "degraded"``), and ``ringbridge_nats_connected`` is 0 for the
alert rules; it is not one of :data:`READY_CHECKS`.
"""

from __future__ import annotations

from typing import Any

from ..errors import RingbridgeError
from ..runtime import Runtime

#: The checks that must all hold for ``/readyz`` to answer 200.
READY_CHECKS = (
    "object_loaded",
    "ring_mapped",
    "producer_running",
    "single_producer",
    "consumer_progressing",
    "admission_open",
    "ring_consistent",
    "pins_intact",
)
#: Checks reported, and named under ``degraded`` when false, that do not fail readiness.
DEGRADED_CHECKS = ("nats_connected",)


def producer_failure(rt: Runtime | None) -> str | None:
    """Why the process is no longer alive (``/healthz`` 503), or None while it is:
    its producer task died, or another writer touched its ring (the cause says
    how to recover)."""
    if rt is None:
        return None
    # Either way every batch would be refused from now on: only a restart helps.
    crashed = rt.producer.crashed
    if crashed is not None:
        return f"producer task died: {crashed!r}"
    return rt.ring_fault()


def readiness(rt: Runtime | None) -> tuple[bool, dict[str, Any]]:
    """``(ready, checks)``: object loaded, ring mapped, producer running and alone
    on the ring, consumer progressing, admission open with credit for a full batch,
    the ring consistent as the kernel reads it, the pins still there."""
    checks: dict[str, Any] = {
        "object_loaded": rt is not None and not rt.backend.closed,
        "ring_mapped": False,
        "producer_running": rt is not None and rt.producer.alive,
        "single_producer": False,
        "consumer_progressing": False,
        "admission_open": False,
        "ring_consistent": False,
        "pins_intact": False,
    }
    if rt is not None:
        fault = rt.ring_fault()
        checks["single_producer"] = fault is None
        if fault is not None:
            checks["ring_fault"] = fault
        try:
            ring = rt.ring.statistics()
        except RingbridgeError:
            ring = None
        if ring is not None:
            checks["ring_mapped"] = True
            pending = ring.producer_pos - ring.consumer_pos
            stalled = rt.watch.stalled_for(ring.consumer_pos, pending)
            checks["consumer_progressing"] = stalled < rt.watch.stall_s
            checks["pending_bytes"] = pending
            checks["consumer_stalled_seconds"] = round(stalled, 3)
        adm = rt.producer.admission
        # Open and able to admit the largest batch: a saturated instance
        # asks its load balancer for a break instead of answering 503s.
        checks["admission_open"] = not adm.closed and adm.free >= rt.settings.max_batch_bytes
        checks["admission_free_bytes"] = adm.free
        checks["admission_budget_bytes"] = adm.budget
        _ring_watch_checks(rt, checks)
        if rt.fleet is not None:
            checks["nats_connected"] = rt.fleet.healthy
            checks["nats_state"] = rt.fleet.state
    return all(checks[k] for k in READY_CHECKS), checks


def degraded(checks: dict[str, Any]) -> list[str]:
    """The checks of :data:`DEGRADED_CHECKS` that failed (they do not fail readiness)."""
    return [k for k in DEGRADED_CHECKS if k in checks and not checks[k]]


def _ring_watch_checks(rt: Runtime, checks: dict[str, Any]) -> None:
    """The ring as the kernel reads it (not the producer's own copy of its
    position), and the pins still there (:mod:`ringbridge.kernel.ringwatch`)."""
    if rt.ring_watch is None:
        checks["ring_consistent"] = checks["pins_intact"] = True
        return
    seen = rt.ring_watch.check()
    checks["ring_consistent"] = seen.ring_problem is None
    if seen.ring_problem is not None:
        checks["ring_problem"] = seen.ring_problem
    checks["kernel_producer_pos"] = seen.producer_pos
    checks["pins_intact"] = not seen.pins_missing
    if seen.pins_missing:
        checks["pins_missing"] = [str(p) for p in seen.pins_missing]
