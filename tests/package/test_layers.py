"""The library's place among the layers: ``ringbridge.ring`` sits on the ring
protocol core, the kernel binding and the schema layer; nothing below it
imports it, and it imports nothing above it (the producer, the API, the CLI,
the backends, the assembly)."""

from __future__ import annotations

import ast
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[2] / "service"
ABOVE_RING = ("producer", "api", "cli", "backends", "assemble", "runtime", "fleet", "client")
BELOW_RING = ("core", "kernel", "schema")


def _imports(path: Path) -> set[str]:
    """First components (under ringbridge) of what ``path`` imports."""
    package = path.relative_to(SERVICE).parent.parts
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - (node.level - 1)])
                parts = base + (node.module.split(".") if node.module else [])
                names = [[*parts, a.name] for a in node.names] if not node.module else [parts]
            elif node.module and node.module.startswith("ringbridge."):
                names = [node.module.split(".")[1:]]
            else:
                continue
            out.update(n[0] for n in names if n)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("ringbridge."):
                    out.add(a.name.split(".")[1])
    return out


def test_the_ring_library_imports_nothing_above_it() -> None:
    for path in (SERVICE / "ring").glob("*.py"):
        above = _imports(path) & set(ABOVE_RING)
        assert not above, f"{path.name} imports {sorted(above)}"


def test_nothing_below_the_ring_library_imports_it() -> None:
    for layer in BELOW_RING:
        for path in (SERVICE / layer).rglob("*.py"):
            assert "ring" not in _imports(path), path
