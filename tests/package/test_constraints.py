"""The pinned sets stay inside what pyproject.toml allows.

``constraints/lock.txt`` is what every install gets and ``constraints/floors.txt``
what ``make test-floors`` runs on; a range narrowed in pyproject.toml (such as
uvicorn's cap, see tests/service/test_uvicorn_private.py) without moving a pin
would test versions users can no longer install.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]


def _pins(name: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in (REPO / "constraints" / name).read_text().splitlines():
        spec = line.split("#", 1)[0].strip()
        if "==" in spec:
            package, version = spec.split("==", 1)
            out[canonicalize_name(package)] = version.strip()
    return out


def _requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["test"]
    return [Requirement(r) for r in declared]


@pytest.mark.parametrize("pins", ["lock.txt", "floors.txt"])
def test_every_pin_is_allowed_by_pyproject(pins: str) -> None:
    pinned = _pins(pins)
    outside = [
        f"{r.name}=={pinned[canonicalize_name(r.name)]} (pyproject: {r})"
        for r in _requirements()
        if canonicalize_name(r.name) in pinned
        and pinned[canonicalize_name(r.name)] not in r.specifier
    ]
    assert not outside, f"constraints/{pins} pins versions pyproject.toml excludes: {outside}"


def test_the_runtime_dependencies_have_floors_and_a_lock() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    # swagger-ui-bundle-v2 ships static files only: any allowed version serves /docs.
    runtime.discard("swagger-ui-bundle-v2")
    assert runtime <= set(_pins("floors.txt")), runtime - set(_pins("floors.txt"))
    assert runtime <= set(_pins("lock.txt")), runtime - set(_pins("lock.txt"))
