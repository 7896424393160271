"""Our C helpers (``bpf/*.c`` built into ``lib*.so``): found, opened on first use, typed.

The libraries are listed once here; :func:`ringbridge.artifacts.build_artifact`
finds each (its environment variable, the package's ``_bpf/``, the source
tree's ``build/``). A C function is declared next to the code that calls it,
with its signature::

    _KICK = DRAINER.function("rb_drainer_kick", None, ctypes.c_void_p)

Nothing is opened at import: :meth:`NativeFunction.get` opens the library
on first use and returns the typed ctypes function, or raises
:class:`~ringbridge.errors.ConfigError` naming the library, its path and why
(missing, not loadable, built from older sources). Callers that have a
slower path of their own use :meth:`NativeFunction.find`, which returns
None instead and logs once which fallback serves.

``releases_gil`` picks how a call crosses into C: most helpers run for a
few instructions, and ``ctypes.CDLL``'s release and retake of the GIL would
cost more than the call (and, under load, hand the GIL to another thread in
the middle of a commit), so they go through ``ctypes.PyDLL``, GIL held. Calls
that may block (joining a thread) or scan a whole body release it.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path
from typing import Any

from .artifacts import build_artifact
from .errors import ConfigError

__all__ = ["DRAINER", "ORDERING", "VALIDATE", "NativeFunction", "NativeLibrary"]

log = logging.getLogger("ringbridge.native")

_BUILD_HINT = "run 'make setup' (or make -C bpf) to build it"


class NativeLibrary:
    """One helper library: where it is, and its handles once opened."""

    def __init__(self, filename: str, env_var: str, what: str) -> None:
        self.filename = filename
        self.env_var = env_var  # an operator's choice of path (see artifacts)
        self.what = what  # for messages: "drain worker library"
        self._handles: dict[bool, ctypes.CDLL] = {}

    @property
    def path(self) -> Path:
        return build_artifact(self.env_var, self.filename)

    def built(self) -> bool:
        return self.path.exists()

    def function(
        self, name: str, restype: Any, *argtypes: Any, releases_gil: bool = False
    ) -> NativeFunction:
        """Declares C function ``name`` (nothing is opened until it is used)."""
        return NativeFunction(self, name, restype, argtypes, releases_gil)

    def open(self, *, releases_gil: bool) -> ctypes.CDLL:
        """The library's handle (opened once per calling convention)."""
        handle = self._handles.get(releases_gil)
        if handle is None:
            path = self.path
            if not path.exists():
                raise ConfigError(f"{self.what} {path} is missing; {_BUILD_HINT}")
            kind = ctypes.CDLL if releases_gil else ctypes.PyDLL
            try:
                handle = kind(str(path), use_errno=True)
            except OSError as exc:
                raise ConfigError(
                    f"{self.what} {path} cannot be loaded ({exc}); {_BUILD_HINT}"
                ) from exc
            self._handles[releases_gil] = handle
        return handle


class NativeFunction:
    """A C function of a :class:`NativeLibrary` with its ctypes signature."""

    def __init__(
        self,
        library: NativeLibrary,
        name: str,
        restype: Any,
        argtypes: tuple[Any, ...],
        releases_gil: bool,
    ) -> None:
        self.library = library
        self.name = name
        self._restype = restype
        self._argtypes = list(argtypes)
        self._releases_gil = releases_gil
        self._fn: Any = None
        self._unavailable = False  # find() failed once (and said so)

    def get(self) -> Any:
        """The typed function; ConfigError if the library or the symbol is not there."""
        fn = self._fn
        if fn is None:
            lib = self.library
            handle = lib.open(releases_gil=self._releases_gil)
            try:
                fn = getattr(handle, self.name)
            except AttributeError:
                raise ConfigError(
                    f"{lib.what} {lib.path} has no {self.name}: it was built from older "
                    f"sources; {_BUILD_HINT} again"
                ) from None
            fn.argtypes = self._argtypes
            fn.restype = self._restype
            self._fn = fn
        return fn

    def find(self, fallback: str) -> Any | None:
        """The typed function, or None when it cannot be had; the first miss
        logs why and that ``fallback`` serves instead."""
        if self._fn is not None:
            return self._fn
        if self._unavailable:
            return None
        try:
            return self.get()
        except ConfigError as exc:
            self._unavailable = True
            log.warning(
                "native helper unavailable, using a fallback",
                extra={"function": self.name, "error": exc.message, "fallback": fallback},
            )
            return None


#: Release/acquire accesses on the ring's mapping (``bpf/native.c``).
ORDERING = NativeLibrary(
    "libringbridge_native.so", "RINGBRIDGE_NATIVE_LIB", "native ordering helper"
)
#: Binary batch validation and the JSON duplicate-key scan (``bpf/validate.c``, ``bpf/jsonkeys.c``).
VALIDATE = NativeLibrary(
    "libringbridge_validate.so", "RINGBRIDGE_VALIDATE_LIB", "validator library"
)
#: The kick drain's worker thread (``bpf/drainer.c``).
DRAINER = NativeLibrary(
    "libringbridge_drainer.so", "RINGBRIDGE_DRAINER_LIB", "drain worker library"
)
