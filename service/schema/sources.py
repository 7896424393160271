"""Where sample and event types are found: the object's BTF, then the user's files.

``--sample-type NAME`` (and the TYPE of ``--event-map NAME=TYPE``) is looked
up in order:

1. the object's own BTF (or, for ``--ring-pin``, the BTF the kernel has for
   the ring's loader), as before;
2. each ``--sample-btf PATH``, in the order given: an ELF object (its
   ``.BTF``, e.g. a file made by ``ringbridge types``) or a raw BTF file;
3. ``--sample-header HEADER.h``, compiled at start-up by
   :func:`ringbridge.schema.header.compile_header` (clang needed).

The first source that defines the name wins. Every *other* source that
defines it too must agree on the layout (:func:`.layout.layout_difference`):
two definitions that disagree mean one of them is stale, and packing samples
in the wrong one would hand the program garbage. Types are read into the
pure :mod:`.model` while the sources are open, so a :class:`Found` outlives
them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..closing import Closing
from ..errors import RingbridgeError, SchemaError
from . import btf as btf_reader
from . import model
from .compiler import compile_type
from .decoder import TypeDecoder
from .header import HeaderOptions, compile_header
from .jsoncodec import SampleCodec
from .layout import check_map_value, layout_difference

__all__ = ["Found", "TypeSources", "open_btf_file"]


@dataclass(frozen=True)
class Found:
    """A type as found: its model, the name asked for, and the source it came from."""

    name: str
    type: model.Type
    where: str


def open_btf_file(path: Path) -> btf_reader.BtfSource:
    """The BTF of an ELF object or of a raw BTF file; SchemaError naming the path."""
    from ..kernel import libbpf as lb

    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"--sample-btf {path}: no such file")
    try:
        return lb.FileBtf.open(path)
    except RingbridgeError as exc:
        raise SchemaError(
            f"--sample-btf {path}: neither an ELF object with a .BTF section nor a raw BTF "
            f"file ({exc.message})"
        ) from exc


class TypeSources(Closing):
    """An ordered list of BTF sources to find named types in; closes what it opened."""

    def __init__(
        self, sources: Sequence[tuple[str, btf_reader.BtfSource]], owned: Sequence[Closing] = ()
    ) -> None:
        self.sources = list(sources)
        self._owned = list(owned)

    @classmethod
    def open(
        cls,
        *,
        primary: tuple[str, btf_reader.BtfSource] | None = None,
        btf_files: Sequence[Path] = (),
        header: Path | None = None,
        header_options: HeaderOptions | None = None,
        owned: Sequence[Closing] = (),
    ) -> TypeSources:
        """``primary`` (the object's BTF) first, then ``btf_files``, then ``header``
        compiled now (SchemaError naming ``ringbridge types`` without clang).

        ``owned`` (e.g. what holds ``primary``) is closed with the sources, or at
        once if opening them fails; anything else stays the caller's.
        """
        sources: list[tuple[str, btf_reader.BtfSource]] = []
        owned = list(owned)
        try:
            if primary is not None:
                sources.append(primary)
            for path in btf_files:
                btf = open_btf_file(path)
                if isinstance(btf, Closing):
                    owned.append(btf)
                sources.append((f"--sample-btf {path}", btf))
            if header is not None:
                with tempfile.TemporaryDirectory(prefix="ringbridge-header-") as tmp:
                    out = Path(tmp) / "header.bpf.o"
                    compile_header(header, out, header_options)
                    # libbpf reads the whole file in: it may go once parsed.
                    btf = open_btf_file(out)
                if isinstance(btf, Closing):
                    owned.append(btf)
                sources.append((f"--sample-header {header}", btf))
        except BaseException:
            for o in owned:
                o.close()
            raise
        return cls(sources, owned)

    @property
    def wheres(self) -> list[str]:
        return [where for where, _ in self.sources]

    def lookup(self, name: str) -> Found | None:
        """The first definition of ``name``, checked against every later one; or None."""
        first: Found | None = None
        for where, btf in self.sources:
            t = btf_reader.lookup_type(btf, name)
            if t is None:
                continue
            if first is None:
                first = Found(name, t, where)
                continue
            diff = layout_difference(first.type, t, name)
            if diff is not None:
                raise SchemaError(
                    f"{name} is defined differently in {first.where} and in {where} "
                    f"({diff}): one of them is stale; rebuild it or drop it"
                )
        return first

    def find(self, name: str) -> Found:
        """:meth:`lookup`, or a SchemaError naming every place searched and the way out."""
        found = self.lookup(name)
        if found is not None:
            return found
        searched = "; ".join(self.wheres) or "no BTF at all"
        raise SchemaError(
            f"no struct, union or typedef named {name!r} in: {searched}. A type used only "
            "inside the program's functions (e.g. read through bpf_dynptr_data) is not in "
            "its BTF: give the header that defines it (--sample-header HEADER.h, or "
            "`ringbridge types HEADER.h -o types.bpf.o` then --sample-btf types.bpf.o)"
        )

    def find_for(
        self,
        name: str,
        flag: str,
        *,
        map_name: str | None = None,
        declared: tuple[int, model.Type | None] = (0, None),
    ) -> Found:
        """:meth:`find` for a setting (``flag`` leads every error), checked against the
        value ``map_name`` declares (``declared``: ``(value_size, type)``, see
        :func:`.layout.declared_value`; ``(0, None)`` when it declares nothing)."""
        try:
            found = self.find(name)
            if map_name is not None:
                size, value_type = declared
                check_map_value(
                    found.type,
                    name,
                    map_name=map_name,
                    value_size=size,
                    value_type=value_type,
                    where=found.where,
                )
        except SchemaError as exc:
            raise SchemaError(f"{flag}: {exc.message}") from exc
        return found

    def codec(self, name: str | Found) -> SampleCodec:
        """The JSON sample codec of ``name`` (a struct or union), or of a type found."""
        found = name if isinstance(name, Found) else self.find(name)
        return SampleCodec(compile_type(found.type, f"{found.where}: {found.name}"), found.name)

    def decoder(self, name: str | Found) -> TypeDecoder:
        """The decoder of values of ``name`` (e.g. events of a kernel ring buffer)."""
        found = name if isinstance(name, Found) else self.find(name)
        return TypeDecoder.from_type(found.type, where=f"{found.where}: {found.name}")

    def close(self) -> None:
        owned, self._owned = self._owned, []
        for o in owned:
            o.close()
