"""Access lines are structured alike whether the data plane or uvicorn answered."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from ringbridge.api.dataplane.plane import Plane
from ringbridge.logs import JsonFormatter, LogfmtFormatter


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_the_data_planes_access_line_has_the_fields_of_uvicorns() -> None:
    access = logging.getLogger("uvicorn.access")
    keep = _Keep()
    access.addHandler(keep)
    level = access.level
    access.setLevel(logging.INFO)
    try:
        # uvicorn's own call (uvicorn/protocols/http/httptools_impl.py), then ours.
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/readyz", "1.1", 200)
        plane: Any = SimpleNamespace(access=access)
        Plane.access_log(plane, ("127.0.0.1", 5001), "POST", "/v1/samples", 200)
    finally:
        access.removeHandler(keep)
        access.setLevel(level)
    theirs, ours = keep.records
    assert ours.getMessage() == '127.0.0.1:5001 - "POST /v1/samples HTTP/1.1" 200'
    line = LogfmtFormatter().format(ours)
    assert "msg=request client=127.0.0.1:5001 method=POST path=/v1/samples" in line
    assert "http=1.1 status=200" in line
    keys = [k.split("=")[0] for k in LogfmtFormatter().format(theirs).split()]
    assert [k.split("=")[0] for k in line.split()] == keys
    assert '"path": "/v1/samples"' in JsonFormatter().format(ours)
