"""schemathesis against /openapi.json of a real server on a real ring: every
documented operation, generated inputs, every response checked against the
document -- no undocumented status, no 5xx but the documented 503, bodies
and content types as documented."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from ringbridge import wire

from .conftest import SMALL_RING, ServerFactory

pytestmark = pytest.mark.kernel

AUTH = {"Authorization": "Bearer fuzz-token"}
#: The 5xx the network contract documents: retry later, nothing committed.
DOCUMENTED_503 = {"overloaded", "ring_full_timeout", "stopping", "closed"}


def only_documented_503(ctx: Any, response: Any, case: Any) -> bool | None:
    """Instead of "no 5xx at all": a 503 with Retry-After and a documented code."""
    if response.status_code < 500:
        return None
    assert response.status_code == 503, f"{response.status_code}: {response.text[:200]}"
    headers = {k.lower(): v for k, v in response.headers.items()}
    assert "retry-after" in headers, "503 without Retry-After"
    code = response.json()["error"]["code"]
    assert code in DOCUMENTED_503, f"undocumented 503 code {code!r}"
    return True


def _has_integral_float(node: Any) -> bool:
    if isinstance(node, float):
        return node.is_integer()
    if isinstance(node, dict):
        return any(_has_integral_float(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_integral_float(v) for v in node)
    return False


def test_every_operation_honours_the_document(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=SMALL_RING, token="fuzz-token", max_timeout=1.0)
    schema = schemathesis.openapi.from_url(f"{srv.url}/openapi.json")
    operations: list[Any] = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    paths = {op.path for op in operations}
    assert {"/v1/samples", "/v1/stats", "/healthz", "/readyz", "/metrics"} <= paths
    sent = [0]
    for op in operations:

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(), authed=st.booleans())
        def run(case: Any, authed: bool) -> None:
            # An octet-stream body is "any bytes" to JSON Schema, but must be
            # records in the ring's format: only there may valid-looking
            # input be refused (422). Every other check applies everywhere.
            # And JSON Schema cannot tell 2 from 2.0, while the decoder takes
            # only integers for integer fields (on purpose: no silent casts).
            binary = case.media_type == "application/octet-stream"
            binary = binary or _has_integral_float(case.body)
            # Without the token too: 401 is documented where auth applies.
            excluded: list[Any] = [not_a_server_error]
            if binary:
                excluded.append(positive_data_acceptance)
            # A key names one batch: the same key with another body is refused
            # (422 key_reused), a rule across requests no schema can state. The
            # generated key keeps its form, made unique per request.
            headers = case.headers or {}
            key = headers.get(wire.IDEMPOTENCY_KEY)
            if isinstance(key, str):
                sent[0] += 1
                headers[wire.IDEMPOTENCY_KEY] = f"{key[:200]}-{sent[0]}"
            case.call_and_validate(
                headers=AUTH if authed else None,
                excluded_checks=excluded,
                additional_checks=[only_documented_503],
            )

        run()
    # What the fuzzer sent did not leave the service broken.
    assert srv.runtime.producer.alive
    assert srv.runtime.producer.admission.in_use == 0
