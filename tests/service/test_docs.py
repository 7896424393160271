"""``/docs`` is Swagger UI served from the service itself: nothing from a CDN.

No kernel needed: the docs routes do not touch the runtime, so the app is
driven through ASGI without its lifespan.
"""

from __future__ import annotations

import re

import httpx
import pytest

from ringbridge.api.app import create_app
from ringbridge.settings import Settings

# Every URL the page makes the browser fetch: src=, href=, url: '...' in the
# inline script (the OpenAPI document).
_REFS = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|\burl\s*:\s*["']([^"']+)["']""")


@pytest.fixture
async def client() -> httpx.AsyncClient:
    app = create_app(Settings())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rb")


async def test_docs_page_fetches_nothing_external(client: httpx.AsyncClient) -> None:
    async with client:
        r = await client.get("/docs")
        assert r.status_code == 200
        page = r.text
        assert "SwaggerUIBundle" in page
        refs = [a or b for a, b in _REFS.findall(page)]
        # The page's script, stylesheet, favicon and the OpenAPI document.
        assert len(refs) >= 4, refs
        assert not [u for u in refs if re.match(r"^(?:[a-z]+:)?//", u)], refs
        assert "cdn" not in page.lower()
        # No online validator badge (it would call a public service).
        assert '"validatorUrl": null' in page
        for ref in refs:
            asset = await client.get(ref)
            assert asset.status_code == 200, ref
            assert len(asset.content) > 0
        js = await client.get("/docs/assets/swagger-ui-bundle.js")
        assert "javascript" in js.headers["content-type"]
        assert len(js.content) > 500_000  # the real bundle, not a placeholder
        css = await client.get("/docs/assets/swagger-ui.css")
        assert css.headers["content-type"].startswith("text/css")
        # The OpenAPI document the page loads describes the ingestion route.
        spec = (await client.get("/openapi.json")).json()
        assert "/v1/samples" in spec["paths"]


async def test_redoc_is_not_offered_and_unknown_assets_are_404(
    client: httpx.AsyncClient,
) -> None:
    async with client:
        assert (await client.get("/redoc")).status_code == 404
        assert (await client.get("/docs/assets/no-such-file.js")).status_code == 404
        assert (await client.get("/docs/assets/../../etc/passwd")).status_code == 404
