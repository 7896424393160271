"""``ringbridge stats``: ``GET /v1/stats`` as a table, or the raw JSON."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ClientError, RejectedError
from .common import EXIT_OK, fail


def _rows(prefix: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for k, v in value.items():
            rows += _rows(f"{prefix}.{k}" if prefix else str(k), v)
        return rows
    return [
        (
            prefix,
            f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value),
        )
    ]


def render_stats(stats: dict[str, Any]) -> str:
    """A readable table: one ``section.key  value`` row per number, then kinds."""
    stats = dict(stats)
    kernel = dict(stats.get("kernel", {}))
    kinds: dict[str, dict[str, int]] = kernel.pop("kinds", {}) or {}
    if "kernel" in stats:
        stats["kernel"] = kernel
    rows = _rows("", stats)
    width = max((len(k) for k, _ in rows), default=0)
    lines = [f"{k:<{width}}  {v:>}" for k, v in rows]
    if kinds:
        lines.append("")
        lines.append(f"{'kind':>6}  {'samples':>14}  {'value sum':>22}")
        for kind, kv in sorted(kinds.items(), key=lambda kv: int(kv[0])):
            lines.append(f"{kind:>6}  {kv.get('samples', 0):>14,}  {kv.get('value', 0):>22,}")
    return "\n".join(lines)


def cmd_stats(args: argparse.Namespace) -> int:
    try:
        from ..client import Client  # not at import: serve never loads httpx

        with Client(args.url, token=args.token, timeout=args.timeout, retries=0) as c:
            stats = c.stats()
    except RejectedError as exc:
        hint = " (pass --token or set $RINGBRIDGE_TOKEN)" if exc.status in (401, 403) else ""
        return fail(f"stats: {c.url.http('/v1/stats')}: {exc.message}{hint}")
    except ClientError as exc:
        return fail(f"stats: {exc.message}")
    print(json.dumps(stats, indent=2) if args.json else render_stats(stats))
    return EXIT_OK
