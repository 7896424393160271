"""C header -> BTF: every type a header defines, compiled with clang into an object.

A user's wire struct is usually *not* in their program's BTF: clang emits BTF
only for types reachable from globals, maps and non-inlined function
signatures, and a struct read through ``bpf_dynptr_data()`` in an inlined
function is none of those. Its authoritative definition is the header the
BPF program and user space share. :func:`compile_header` turns that header
into an ELF object whose ``.BTF`` holds every struct, union, enum and typedef
the header defines -- one pointer-typed global per type (an "anchor") makes
clang emit each whole -- so ``--sample-btf FILE`` can find them all.

How it finds what the header defines, without reading C itself:

1. the prelude (``<linux/types.h>`` by default: BPF headers use ``__u32`` and
   friends without including it, because the program included it first;
   ``--include`` replaces it, e.g. with ``vmlinux.h``) is compiled into a
   precompiled header;
2. clang dumps the AST (``-Xclang -ast-dump=json``) of a unit that includes
   the header on top of that PCH: decls that came from the PCH are not
   dumped, so even a vmlinux.h prelude stays out of the way;
3. the dump's top-level struct/union/enum definitions and typedefs (and
   structs defined inside structs, which C puts at file scope) whose location
   is in the header itself are the types. clang writes a location's file only
   when it changes from the previous location printed, so the walk follows
   the dump in document order.

Flags are the program's (``-g -O2 -target bpf``), plus ``-I`` dirs, ``-D``
defines and the multiarch include dir where ``asm/types.h`` lives on Debian.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from ..errors import SchemaError

__all__ = [
    "DEFAULT_PRELUDE",
    "HeaderOptions",
    "HeaderType",
    "compile_header",
    "find_clang",
    "header_types",
]

#: What a BPF program includes before its shared header, unless told otherwise.
DEFAULT_PRELUDE: Final = ("linux/types.h",)
CLANG_ENV: Final = "RINGBRIDGE_CLANG"
_TIMEOUT: Final = 300.0
_ANCHOR_PREFIX: Final = "__ringbridge_anchor"

Kind = Literal["struct", "union", "enum", "typedef"]


@dataclass(frozen=True, slots=True)
class HeaderType:
    """A type a header defines (``struct foo``, ``foo_t``...)."""

    kind: Kind
    name: str

    @property
    def c_name(self) -> str:
        return self.name if self.kind == "typedef" else f"{self.kind} {self.name}"


@dataclass(frozen=True)
class HeaderOptions:
    """How the program compiles the header: include dirs, the prelude, defines."""

    include_dirs: tuple[Path, ...] = ()
    #: Included before the header, in order; None: :data:`DEFAULT_PRELUDE`. An
    #: existing file is included by its path, anything else as ``<name>``.
    includes: tuple[str, ...] | None = None
    defines: tuple[str, ...] = ()
    clang: str | None = None
    extra_flags: tuple[str, ...] = ()

    @property
    def prelude(self) -> tuple[str, ...]:
        return DEFAULT_PRELUDE if self.includes is None else self.includes


def find_clang(clang: str | None = None) -> str:
    """The clang to run (``clang``, ``$RINGBRIDGE_CLANG``, or the given one)."""
    name = clang or os.environ.get(CLANG_ENV) or "clang"
    found = shutil.which(name)
    if found is None:
        raise SchemaError(
            f"clang ({name}) is not installed here (e.g. in the runtime image), so a C header "
            "cannot be compiled: on a machine with clang run `ringbridge types HEADER.h "
            "-o types.bpf.o` and start the service with --sample-btf types.bpf.o"
        )
    return found


def _multiarch_include(clang: str) -> list[str]:
    # Debian keeps asm/types.h (which linux/types.h needs) under the
    # multiarch dir, which a -target bpf compile does not search by itself.
    try:
        out = subprocess.run(
            [clang, "-print-multiarch"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    path = Path("/usr/include") / out if out else None
    return [f"-I{path}"] if path is not None and path.is_dir() else []


def _flags(clang: str, header: Path, opts: HeaderOptions) -> list[str]:
    flags = ["-target", "bpf", f"-I{header.parent}"]
    flags += [f"-I{d}" for d in opts.include_dirs]
    flags += _multiarch_include(clang)
    flags += [f"-D{d}" for d in opts.defines]
    return flags + list(opts.extra_flags)


def _include_line(item: str) -> str:
    path = Path(item)
    if path.is_file():
        return f'#include "{path.resolve()}"\n'
    return f"#include <{item}>\n"


def _run(cmd: list[str], what: str) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SchemaError(f"{what}: cannot run {cmd[0]}: {exc}") from exc
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        shown = "\n".join(lines[-25:])
        raise SchemaError(f"{what}: clang failed (exit {done.returncode}):\n{shown}")
    return done.stdout


def _check_header(header: Path) -> Path:
    if not header.is_file():
        raise SchemaError(f"header {header} does not exist")
    return header.resolve()


# -- which types the header defines -------------------------------------------


class _Walk:
    """The AST dump in document order, following the current location's file."""

    def __init__(self, header: Path) -> None:
        self.header = header
        self.file: str | None = None
        self.found: dict[HeaderType, None] = {}

    def _in_header(self) -> bool:
        if self.file is None:
            return False
        try:
            return Path(self.file).resolve() == self.header
        except OSError:
            return False

    def node(self, value: Any, collect: bool) -> None:
        if isinstance(value, list):
            for item in value:
                self.node(item, collect)
            return
        if not isinstance(value, dict):
            return
        if "offset" in value and isinstance(value.get("file"), str):
            self.file = value["file"]  # a location that names its file
        kind = value.get("kind")
        decl_in_header = False
        for key, item in value.items():
            if key == "inner":
                # C gives structs defined inside structs file scope; types
                # defined inside functions have none.
                self.node(item, collect and kind == "RecordDecl")
            else:
                self.node(item, False)
            if key == "loc":
                decl_in_header = self._in_header()
        if collect and decl_in_header:
            self._collect(value, kind)

    def _collect(self, decl: dict[str, Any], kind: Any) -> None:
        name = decl.get("name")
        if not isinstance(name, str) or not name:
            return
        if kind == "RecordDecl" and decl.get("completeDefinition"):
            tag = decl.get("tagUsed")
            if tag in ("struct", "union"):
                self.found[HeaderType(tag, name)] = None
        elif kind == "EnumDecl" and any(
            isinstance(c, dict) and c.get("kind") == "EnumConstantDecl"
            for c in decl.get("inner", ())
        ):
            self.found[HeaderType("enum", name)] = None
        elif kind == "TypedefDecl":
            self.found[HeaderType("typedef", name)] = None


def _prelude_pch(clang: str, flags: list[str], opts: HeaderOptions, tmp: Path) -> Path:
    prelude = tmp / "prelude.h"
    prelude.write_text("".join(_include_line(i) for i in opts.prelude))
    pch = tmp / "prelude.pch"
    _run([clang, *flags, "-x", "c-header", str(prelude), "-o", str(pch)], "compiling the prelude")
    return pch


def _types_in(clang: str, header: Path, opts: HeaderOptions, tmp: Path) -> list[HeaderType]:
    flags = _flags(clang, header, opts)
    pch = _prelude_pch(clang, flags, opts, tmp)
    unit = tmp / "header_types.c"
    unit.write_text(f'#include "{header}"\n')
    dump = _run(
        [clang, *flags, "-include-pch", str(pch), "-fsyntax-only", "-Xclang", "-ast-dump=json",
         str(unit)],
        f"reading {header}",
    )  # fmt: skip
    try:
        tree = json.loads(dump)
    except ValueError as exc:
        raise SchemaError(f"reading {header}: clang's AST dump is not JSON: {exc}") from exc
    walk = _Walk(header)
    walk.node(tree.get("inner", []), True)
    return list(walk.found)


def header_types(header: Path, options: HeaderOptions | None = None) -> list[HeaderType]:
    """The structs, unions, enums and typedefs ``header`` itself defines, in order."""
    opts = options or HeaderOptions()
    clang = find_clang(opts.clang)
    header = _check_header(Path(header))
    with tempfile.TemporaryDirectory(prefix="ringbridge-types-") as tmp:
        return _types_in(clang, header, opts, Path(tmp))


# -- anchors -> an object with all of them in .BTF ---------------------------


def _anchors(types: Sequence[HeaderType]) -> Iterator[str]:
    # Pointers: clang then emits the pointee whole, and a pointer can be
    # declared to every kind of type (function typedefs, incomplete structs).
    for t in types:
        yield f"{t.c_name} *{_ANCHOR_PREFIX}_{t.kind}_{t.name};\n"


def compile_header(
    header: Path, out: Path, options: HeaderOptions | None = None
) -> list[HeaderType]:
    """Compiles ``header`` into the ELF object ``out`` with every type it defines in
    ``.BTF``; returns those types. ``out`` is replaced whole or left as it was."""
    opts = options or HeaderOptions()
    clang = find_clang(opts.clang)
    header = _check_header(Path(header))
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="ringbridge-types-") as tmp_name:
        tmp = Path(tmp_name)
        types = _types_in(clang, header, opts, tmp)
        if not types:
            raise SchemaError(
                f"header {header} defines no struct, union, enum or typedef (with "
                f"{', '.join(opts.prelude) or 'no prelude'} included first)"
            )
        unit = tmp / "anchors.c"
        unit.write_text(
            "/* Generated by `ringbridge types`: one anchor per type of the header. */\n"
            + "".join(_include_line(i) for i in opts.prelude)
            + f'#include "{header}"\n'
            + "".join(_anchors(types))
        )
        built = tmp / "types.bpf.o"
        flags = _flags(clang, header, opts)
        _run(
            [clang, "-g", "-O2", *flags, "-c", str(unit), "-o", str(built)],
            f"compiling {header}",
        )
        _check_emitted(built, types, header)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            staged = out.with_name(f".{out.name}.{os.getpid()}.tmp")
            shutil.copyfile(built, staged)
            os.replace(staged, out)
        except OSError as exc:
            raise SchemaError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return types


def _check_emitted(obj: Path, types: Sequence[HeaderType], header: Path) -> None:
    from ..kernel import libbpf as lb

    kinds = {
        "struct": (lb.BTF_KIND_STRUCT,),
        "union": (lb.BTF_KIND_UNION,),
        "enum": (lb.BTF_KIND_ENUM, lb.BTF_KIND_ENUM64),
        "typedef": (lb.BTF_KIND_TYPEDEF,),
    }
    with lb.FileBtf.open(obj) as btf:
        missing = [
            t.c_name
            for t in types
            if all(btf.find_by_name_kind(t.name, k) is None for k in kinds[t.kind])
        ]
    if missing:
        raise SchemaError(f"compiling {header}: clang left {', '.join(missing)} out of the BTF")
