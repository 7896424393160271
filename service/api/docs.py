"""``/docs`` and ``/openapi.json`` behind the bearer token (``protect_metrics``).

FastAPI serves its docs without any dependency; with ``protect_metrics`` the
app is built without them and these routes, which check the token, take
their place. ``/redoc`` is not served then.
"""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from .auth import require_token_if_protected


def install_protected_docs(app: FastAPI) -> None:
    guard = [Depends(require_token_if_protected)]

    @app.get("/openapi.json", include_in_schema=False, dependencies=guard)
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=guard)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")
