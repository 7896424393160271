"""Swagger UI at ``/docs``, served from this host (no CDN, works offline), and
``/docs`` with ``/openapi.json`` behind the bearer token when ``protect_metrics``.

FastAPI's own ``/docs`` page loads Swagger UI's script and stylesheet from a
public CDN, which hosts where BPF runs often cannot reach. The assets come
instead from the ``swagger-ui-bundle-v2`` package (Swagger UI's dist files,
Apache-2.0, license in its dist-info) and are served under ``/docs/assets``
(static files of a public project: never behind the token). Swagger UI's
online validator badge is turned off for the same reason
(``validatorUrl: null``). ReDoc (CDN-only) is not offered.

The assets are read through a directory fd opened when the app is made,
as root: after ``--user`` the service may not walk the path to a venv under
a 0700 home, but ``openat`` on the held fd checks only the assets'
directory and files, which are readable by anyone.
"""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path
from typing import Any

import swagger_ui_bundle
from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from .auth import require_token_if_protected

DOCS_URL = "/docs"
OPENAPI_URL = "/openapi.json"
ASSETS_URL = "/docs/assets"


def assets_dir() -> Path:
    return Path(str(swagger_ui_bundle.swagger_ui_path))


class _Assets:
    """The files of one directory, read through an fd of it held from the start."""

    def __init__(self, directory: Path) -> None:
        self._fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._types = {
            name: mimetypes.guess_type(name)[0] or "application/octet-stream"
            for name in os.listdir(self._fd)
        }

    def response(self, name: str) -> Response:
        media_type = self._types.get(name)
        if media_type is None:
            return Response(status_code=404)
        fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=self._fd)
        with os.fdopen(fd, "rb") as f:
            body = f.read()
        return Response(body, media_type=media_type, headers={"Cache-Control": "max-age=3600"})


def install_docs(app: FastAPI, *, protect: bool) -> None:
    """``GET /docs`` and its assets; with ``protect``, also a token-checked ``/openapi.json``.

    The app must be created with ``docs_url=None`` (and ``openapi_url=None``
    when ``protect``).
    """
    assets = _Assets(assets_dir())

    @app.get(ASSETS_URL + "/{name}", include_in_schema=False)
    def swagger_ui_asset(name: str) -> Response:
        # Static files of a public project: never behind the token.
        return assets.response(name)

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
