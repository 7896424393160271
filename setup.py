"""Build hooks the declarative ``pyproject.toml`` cannot express.

The metadata lives in ``pyproject.toml``. This file adds two steps so that a
wheel built from a clean checkout (``pip wheel .``, ``python -m build``)
serves on its own, with no source tree:

- ``build_py`` first runs ``make -C bpf package``, which compiles the BPF
  object and the native C helpers and installs them into ``service/_bpf/``,
  shipped as package data (``ringbridge/_bpf/``). An editable install skips
  it: it reads ``service/_bpf/`` in place, which ``make setup`` fills.
- the wheel is tagged for the platform (``py3-none-linux_<arch>``): it holds
  machine code, but no CPython extension, so any Python 3 of that
  architecture can use it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildWithArtifacts(build_py):
    def run(self) -> None:
        if not getattr(self, "editable_mode", False):
            # Fails the build (clang/cc/libbpf missing) rather than
            # shipping a wheel that cannot load its BPF object.
            subprocess.run(
                ["make", "-s", "-C", str(HERE / "bpf"), "package", "OUT=../build"], check=True
            )
        super().run()


class NativeDistribution(Distribution):
    def has_ext_modules(self) -> bool:
        # Native code inside: a platform wheel, installed into platlib.
        return True


class PlatformWheel(bdist_wheel):
    def get_tag(self) -> tuple[str, str, str]:
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(
    distclass=NativeDistribution,
    cmdclass={"build_py": BuildWithArtifacts, "bdist_wheel": PlatformWheel},
)
