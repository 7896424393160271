"""Liveness and readiness: one rule, read by ``/healthz``, ``/readyz`` and ``/metrics``.

``/readyz`` answers a load balancer now; ``ringbridge_ready`` and
``ringbridge_producer_up`` let Prometheus see the same verdicts over time
(alert rules cannot probe an HTTP route). Both read these functions, so the
probe and the alert never disagree about what "ready" means.
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
)


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
    on the ring, consumer progressing, admission open with credit for a full batch."""
    checks: dict[str, Any] = {
        "object_loaded": rt is not None and not rt.backend.closed,
        "ring_mapped": False,
        "producer_running": rt is not None and rt.producer.alive,
        "single_producer": False,
        "consumer_progressing": False,
        "admission_open": False,
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
    return all(checks[k] for k in READY_CHECKS), checks
