"""Structured log lines: ``key=value`` (logfmt) or one JSON object per line.

Fields come from the record's ``extra``: ``log.info("batch failed",
extra={"code": "ring_full_timeout", "batches": 3})`` gives
``ts=... level=info logger=ringbridge.producer msg="batch failed"
code=ring_full_timeout batches=3``. uvicorn's own loggers go through the same
handler; its access lines are turned into fields (client, method, path,
status) rather than a preformatted sentence.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "color_message", "taskName"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
        client, method, path, version, status = record.args
        out.update(client=client, method=method, path=path, http=version, status=status)
        msg = "request"
    else:
        msg = record.getMessage()
    base: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": msg,
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            out[key] = value
    if record.exc_info:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    return base | out


def _logfmt_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text and not any(c in text for c in ' "=\n\t\\'):
        return text
    return json.dumps(text)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_logfmt_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


def configure_logging(level: str = "info", *, json_lines: bool = False) -> None:
    """Route ringbridge's and uvicorn's loggers to one structured stderr handler."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else LogfmtFormatter())
    numeric = logging.getLevelName(level.upper())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lg = logging.getLogger(name)
        # uvicorn installs its own handlers when given a log_config; we pass
        # none, and make sure records propagate to ours exactly once.
        lg.handlers[:] = []
        lg.propagate = True
