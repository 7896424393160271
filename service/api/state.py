"""What the API layer shares between routes: reaching the running service.

The :class:`~ringbridge.runtime.Runtime` is built by
:func:`ringbridge.assemble.assemble` and hung on ``app.state.runtime`` by the
lifespan in :mod:`ringbridge.api.app`; routes reach it through
:func:`runtime_of`.
"""

from __future__ import annotations

from fastapi import FastAPI

from ..errors import StoppingError
from ..runtime import Runtime


def runtime_of(app: FastAPI) -> Runtime:
    rt: Runtime | None = getattr(app.state, "runtime", None)
    if rt is None:
        raise StoppingError("the service is not running (starting up or shut down)")
    return rt
