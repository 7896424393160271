"""``--protect-metrics``: /metrics, /docs and /openapi.json want the token too."""

from __future__ import annotations

import httpx
import pytest

from ringbridge.errors import ConfigError
from ringbridge.settings import Settings

from .conftest import ServerFactory

TOKEN = "metrics-token"


def test_protect_metrics_needs_a_token() -> None:
    with pytest.raises(ConfigError, match="protect_metrics needs a token"):
        Settings(protect_metrics=True)


@pytest.mark.kernel
def test_protected_metrics_and_docs_want_the_token(make_server: ServerFactory) -> None:
    srv = make_server(ring_size=1 << 20, token=TOKEN, protect_metrics=True)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        for path in ("/metrics", "/docs", "/openapi.json"):
            r = c.get(path)
            assert r.status_code == 401, path
            assert r.json()["error"]["code"] == "unauthorized"
            assert c.get(path, headers={"Authorization": "Bearer nope"}).status_code == 403
        r = c.get("/metrics", headers=auth)
        assert r.status_code == 200 and "ringbridge_kernel_samples_total" in r.text
        r = c.get("/docs", headers=auth)
        assert r.status_code == 200 and "swagger" in r.text.lower()
        assert "/v1/samples" in c.get("/openapi.json", headers=auth).json()["paths"]
        assert c.get("/redoc", headers=auth).status_code == 404
        assert c.get("/healthz").status_code == 200  # probes stay open


@pytest.mark.kernel
def test_by_default_metrics_and_docs_are_open_even_with_a_token(
    make_server: ServerFactory,
) -> None:
    srv = make_server(ring_size=1 << 20, token=TOKEN)
    with httpx.Client(base_url=srv.url, timeout=10) as c:
        assert c.get("/metrics").status_code == 200
        assert c.get("/docs").status_code == 200
        assert c.get("/openapi.json").status_code == 200
        assert c.get("/v1/stats").status_code == 401
