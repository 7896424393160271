"""GET /v1/schema and the OpenAPI body schema of the running service's sample type."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from .conftest import Server, ServerFactory

pytestmark = pytest.mark.kernel


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def test_schema_is_the_default_sample_type(client: httpx.Client, server: Server) -> None:
    r = client.get("/v1/schema")
    assert r.status_code == 200, r.text
    schema = r.json()
    assert schema == server.runtime.codec.json_schema()
    assert schema["$schema"].endswith("/2020-12/schema")
    typed, raw = schema["oneOf"]
    assert typed["title"] == "struct ringbridge_sample"
    assert typed["additionalProperties"] is False
    assert typed["properties"] == {
        "kind": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
        "flags": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
        "value": {"type": "integer", "minimum": 0, "maximum": 2**64 - 1},
    }
    assert raw["required"] == ["data"]


def test_openapi_shows_the_sample_schema_for_the_json_body(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/schema" in spec["paths"]
    body = spec["paths"]["/v1/samples"]["post"]["requestBody"]["content"]["application/json"]
    items = body["schema"]["properties"]["samples"]["items"]
    assert items["oneOf"][0]["title"] == "struct ringbridge_sample"
    assert set(items["oneOf"][0]["properties"]) == {"kind", "flags", "value"}
    assert "$schema" not in items


def test_schema_needs_the_token(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=1 << 20, token="s3cret")
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        assert c.get("/v1/schema").status_code == 401
        r = c.get("/v1/schema", headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and "oneOf" in r.json()
