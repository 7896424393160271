"""Swagger UI at ``/docs``, served from this host (no CDN, works offline), and
``/docs`` with ``/openapi.json`` behind the bearer token when ``protect_metrics``.

FastAPI's own ``/docs`` page loads Swagger UI's script and stylesheet from a
public CDN, which hosts where BPF runs often cannot reach. The assets come
instead from the ``swagger-ui-bundle-v2`` package (Swagger UI's dist files,
Apache-2.0, license in its dist-info) and are served under ``/docs/assets``
(static files of a public project: never behind the token). Swagger UI's
online validator badge is turned off for the same reason
(``validatorUrl: null``). ReDoc (CDN-only) is not offered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import swagger_ui_bundle
from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from .auth import require_token_if_protected

DOCS_URL = "/docs"
OPENAPI_URL = "/openapi.json"
ASSETS_URL = "/docs/assets"


def assets_dir() -> Path:
    return Path(str(swagger_ui_bundle.swagger_ui_path))


def install_docs(app: FastAPI, *, protect: bool) -> None:
    """``GET /docs`` and its assets; with ``protect``, also a token-checked ``/openapi.json``.

    The app must be created with ``docs_url=None`` (and ``openapi_url=None``
    when ``protect``).
    """
    app.mount(ASSETS_URL, StaticFiles(directory=assets_dir()), name="swagger-ui-assets")
    guard: list[Any] = [Depends(require_token_if_protected)] if protect else []

    if protect:

        @app.get(OPENAPI_URL, include_in_schema=False, dependencies=guard)
        async def openapi() -> JSONResponse:
            return JSONResponse(app.openapi())

    @app.get(DOCS_URL, include_in_schema=False, dependencies=guard)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title=f"{app.title} - API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
            oauth2_redirect_url=None,
            swagger_ui_parameters={"validatorUrl": None},
        )
