"""The package's structure rules, read off the source (nothing is imported).

* Every module under ``service/`` is at most :data:`MAX_LINES` lines, with a
  stated allowance of :data:`ALLOWANCE` ("~400"): past that it is split by job.
* Layering: a part of the package imports only the parts :data:`ALLOWED`
  names for it -- lower layers never import upper ones. Every import counts,
  including those inside functions and under ``TYPE_CHECKING``: a lazy import
  is still a dependency.
* One import style inside the package: relative (ruff's TID251 says it at
  lint time; this says it for the layering walk, which must see every import).
* The ring protocol core does no I/O.
* Every package folder under ``service/`` is listed in pyproject.toml's
  ``packages`` (a folder left out is missing from the wheel).
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SERVICE = REPO / "service"
PACKAGE = "ringbridge"  # service/ installs under this name

MAX_LINES = 400
#: How far past MAX_LINES a module may run ("~400") before it must be split.
ALLOWANCE = 20
#: Modules past the limit whose split is still to come, each held at the size it
#: had when it was listed: they may shrink (and leave this list), never grow.
OVER_LIMIT: dict[str, int] = {}

# -- the layering table --------------------------------------------------------
#
# A unit is a subpackage of service/ or a top-level module; "ringbridge" is the
# package's own __init__. Each unit may import itself and the units listed;
# a dotted entry ("kernel.libbpf") allows that part of a unit only. Listed
# from the bottom up: core -> kernel -> producer -> api -> cli.

#: Helpers everything may use: the exception tree, idempotent close, sizes,
#: where built artifacts are, the value types of settings.
_BASE = frozenset({"errors", "closing", "units", "artifacts", "settings_types"})

#: What the service is assembled from, below runtime and assemble.
_SERVICE = frozenset(
    {"core", "wire", "kernel", "schema", "ring", "producer", "events", "fleet", "backends"}
    | {"settings"}
)

ALLOWED: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "closing": frozenset(),
    "units": frozenset(),
    "artifacts": frozenset(),
    "logs": frozenset(),
    # The ring protocol and the network contract: pure, below everything.
    "core": frozenset({"errors"}),
    "wire": frozenset({"errors"}),
    "nativelib": frozenset({"errors", "artifacts"}),
    "kernel": _BASE | {"core", "nativelib"},
    # Reading BTF out of object and BTF files is libbpf's (user-space) work:
    # schema may use the binding, never the rest of the kernel layer.
    "schema": _BASE | {"core", "nativelib", "kernel.libbpf"},
    # ringbridge.ring, the public producer library: a user ring over the binding.
    "ring": _BASE | {"core", "kernel", "schema"},
    "producer": _BASE | {"core", "wire", "kernel", "ring"},
    "events": _BASE | {"core", "wire", "kernel", "schema"},
    # The fleet front door: NATS messages into the same producer path.
    "fleet": _BASE | {"core", "wire", "kernel", "schema", "ring", "producer"},
    "settings_types": frozenset({"errors", "units"}),
    "settings_sources": frozenset({"errors"}),
    "settings_clients": frozenset({"settings_types"}),
    "settings_access": _BASE | {"kernel.privileges"},
    "settings": _BASE
    | {"core", "kernel", "schema", "events", "fleet"}
    | {"settings_sources", "settings_clients", "settings_access"},
    "backends": _BASE
    | {"core", "wire", "nativelib", "kernel", "schema", "ring", "producer", "events", "settings"},
    "runtime": _BASE | _SERVICE,
    # nativelib: the helpers are loaded before a privilege drop (--user).
    "assemble": _BASE | _SERVICE | {"runtime", "nativelib"},
    # The HTTP/WebSocket layer: everything below it but the kernel layer itself.
    "api": _BASE | (_SERVICE - {"kernel"}) | {"ringbridge", "logs", "runtime", "assemble"},
    # The Python client talks to a service over the network contract only.
    "client": _BASE | {"core", "wire"},
    "healthcheck": _BASE | {"settings"},
    "cli": frozenset({"*"}),
    "__main__": frozenset({"cli"}),
    "ringbridge": frozenset({"client"}),
}

#: Modules whose import means I/O; the ring protocol core takes none of them.
IO_MODULES = frozenset(
    {"os", "io", "mmap", "ctypes", "socket", "select", "selectors", "asyncio", "subprocess"}
    | {"threading", "pathlib", "shutil", "tempfile", "fcntl", "signal"}
)


@dataclass(frozen=True)
class Import:
    module: str  # dotted path under the package, "" for the package itself
    absolute: bool
    line: int


def _modules() -> list[Path]:
    return sorted(p for p in SERVICE.rglob("*.py") if "_bpf" not in p.parts)


def _name(path: Path) -> list[str]:
    """service/kernel/libbpf/btf.py -> [kernel, libbpf, btf]; __init__ names its package."""
    parts = list(path.relative_to(SERVICE).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _is_module(parts: list[str]) -> bool:
    here = SERVICE.joinpath(*parts) if parts else SERVICE
    return here.with_suffix(".py").is_file() or (here / "__init__.py").is_file()


def _imports(path: Path) -> Iterator[Import]:
    """Every import of the package in ``path``, resolved to a dotted path under it."""
    package = _name(path) if path.name == "__init__.py" else _name(path)[:-1]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top, _, rest = alias.name.partition(".")
                if top == PACKAGE:
                    yield Import(rest, True, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                up = node.level - 1
                assert up <= len(package), f"{path}:{node.lineno}: import above the package"
                base = package[: len(package) - up]
                absolute = False
            elif node.module is not None and node.module.split(".")[0] == PACKAGE:
                base, absolute = [], True
            else:
                continue  # a third-party or stdlib module
            mod = node.module or ""
            if absolute:
                mod = mod.partition(".")[2]
            parts = base + (mod.split(".") if mod else [])
            for alias in node.names:
                # `from . import libbpf` imports a module; `from .x import Name` a name.
                named = [*parts, alias.name]
                target = named if _is_module(named) else parts
                yield Import(".".join(target), absolute, node.lineno)


def _unit(dotted: str) -> str:
    return dotted.split(".")[0] if dotted else PACKAGE


def _all_imports() -> Iterator[tuple[Path, str, Import]]:
    """(module, its unit, one of its imports) for every import in the package."""
    for p in _modules():
        unit = _unit(".".join(_name(p)))
        for i in _imports(p):
            yield p, unit, i


def _allowed(unit: str, target: str) -> bool:
    if _unit(target) == unit:
        return True
    allowed = ALLOWED[unit]
    if "*" in allowed:
        return True
    return any(target == a or target.startswith(a + ".") or _unit(target) == a for a in allowed)


def _where(path: Path, line: int = 0) -> str:
    return f"{path.relative_to(REPO)}:{line}" if line else str(path.relative_to(REPO))


def test_the_walk_sees_the_package() -> None:
    modules = _modules()
    assert len(modules) > 50
    found = {i.module for _, _, i in _all_imports()}
    # The resolution of the three import forms the package uses.
    assert "kernel.libbpf" in found  # from ..kernel import libbpf as lb
    assert "errors" in found  # from ..errors import KernelError
    assert "kernel.libbpf.library" in found  # from .library import lib


def test_every_module_is_at_most_about_400_lines() -> None:
    sizes = {str(p.relative_to(SERVICE)): len(p.read_text().splitlines()) for p in _modules()}
    over = {m: n for m, n in sizes.items() if n > OVER_LIMIT.get(m, MAX_LINES + ALLOWANCE)}
    assert not over, f"modules over {MAX_LINES} (+{ALLOWANCE}) lines, split them by job: {over}"
    # A listed module that is back within the limit leaves the list.
    done = sorted(m for m in OVER_LIMIT if sizes.get(m, 0) <= MAX_LINES + ALLOWANCE)
    assert not done, f"within the limit now, remove from OVER_LIMIT: {done}"


def test_every_unit_has_a_place_in_the_layering() -> None:
    units = {_unit(".".join(_name(p))) for p in _modules()}
    missing = sorted(units - set(ALLOWED))
    assert not missing, f"new parts of the package, give them a row in ALLOWED: {missing}"
    stale = sorted(set(ALLOWED) - units)
    assert not stale, f"rows of ALLOWED for parts that no longer exist: {stale}"


def test_lower_layers_never_import_upper_ones() -> None:
    bad = [
        f"{_where(p, i.line)}: {unit} imports {i.module or PACKAGE}"
        for p, unit, i in _all_imports()
        if not _allowed(unit, i.module)
    ]
    assert not bad, "imports against the layering:\n" + "\n".join(bad)


def test_the_layering_table_has_no_cycle() -> None:
    # A unit allowed to import one that may import it back would make the
    # "lower" of the two meaningless.
    def reach(unit: str, seen: set[str]) -> set[str]:
        for dep in ALLOWED.get(unit, frozenset()) - {"*"}:
            top = _unit(dep)
            if top not in seen:
                seen.add(top)
                reach(top, seen)
        return seen

    cycles = sorted(u for u in ALLOWED if "*" not in ALLOWED[u] and u in reach(u, set()))
    assert not cycles, f"units that may import themselves back through others: {cycles}"


def test_imports_inside_the_package_are_relative() -> None:
    absolute = [
        f"{_where(p, i.line)}: ringbridge.{i.module}" for p, _, i in _all_imports() if i.absolute
    ]
    assert not absolute, f"absolute imports of the package inside it: {absolute}"


def test_the_ring_protocol_core_does_no_io() -> None:
    bad = []
    for p in (SERVICE / "core").rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            else:
                continue
            tops = {n.split(".")[0] for n in names}
            bad += [f"{_where(p, node.lineno)}: {n}" for n in sorted(tops & IO_MODULES)]
    assert not bad, f"the core imports I/O: {bad}"


def test_every_package_folder_is_packaged() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    listed = set(config["tool"]["setuptools"]["packages"])
    folders = {
        ".".join([PACKAGE, *p.parent.relative_to(SERVICE).parts])
        for p in SERVICE.rglob("__init__.py")
    }
    assert folders - listed == set(), "package folders missing from pyproject's packages"
    assert listed - folders == set(), "pyproject lists packages that do not exist"
