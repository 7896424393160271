"""``ringbridge types HEADER.h -o FILE``: a C header's types into BTF the service reads.

For machines without clang (the runtime image): compile the header the BPF
program and user space share where clang is, ship the output, and start the
service with ``--sample-btf FILE``. The output is an ELF object whose ``.BTF``
holds every struct, union, enum and typedef the header defines
(:mod:`ringbridge.schema.header`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import RingbridgeError
from .common import EXIT_OK, EXIT_USAGE, fail


def add_types_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "types",
        help="compile a C header's types into a BTF file for --sample-btf",
        description="Compile HEADER (the header your BPF program and user space share) "
        "with clang (-g -O2 -target bpf) into an ELF object whose BTF holds every struct, "
        "union, enum and typedef it defines, for `ringbridge serve --sample-btf FILE`. "
        "<linux/types.h> is included first, as BPF programs do, unless --include names "
        "what to include instead (e.g. vmlinux.h).",
    )
    p.add_argument("header", type=Path, metavar="HEADER.h")
    p.add_argument(
        "-o", "--output", type=Path, required=True, metavar="FILE", help="the object to write"
    )
    p.add_argument(
        "-I",
        dest="include_dirs",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="include dir (repeatable)",
    )
    p.add_argument(
        "--include",
        dest="includes",
        action="append",
        default=None,
        metavar="FILE",
        help="file (or <name>) to include before HEADER instead of <linux/types.h> "
        "(repeatable, in order)",
    )
    p.add_argument(
        "-D",
        dest="defines",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="preprocessor define (repeatable)",
    )
    p.add_argument("--clang", default=None, metavar="PATH", help="the clang to run")
    p.add_argument("--quiet", "-q", action="store_true", help="do not list the types")
    p.set_defaults(func=cmd_types)


def cmd_types(args: argparse.Namespace) -> int:
    from ..schema.header import HeaderOptions, compile_header

    header: Path = args.header
    if not header.is_file():
        return fail(f"types: header {header} does not exist", EXIT_USAGE)
    opts = HeaderOptions(
        include_dirs=tuple(args.include_dirs),
        includes=tuple(i.strip("<>") for i in args.includes) if args.includes else None,
        defines=tuple(args.defines),
        clang=args.clang,
    )
    try:
        types = compile_header(header, args.output, opts)
    except RingbridgeError as exc:
        return fail(f"types: {exc.message}")
    if not args.quiet:
        for t in types:
            print(t.c_name)
        print(f"wrote {len(types)} types to {args.output}")
    return EXIT_OK
