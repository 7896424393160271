"""A user object's maps and globals on ``/metrics``, the ebpf_exporter way.

For every ``--export-map NAME`` each entry of the map becomes samples, read
at scrape time:

- the **key**'s fields become labels: a struct key gives one label per
  integer, enum or ``char[]`` member (nested members joined with ``_``), a
  plain integer key one label ``key``; enums show their enumerator name,
  ``char[]`` the string up to its NUL;
- the **value**'s integer (and float, bool, enum) fields become samples of
  one gauge each, ``ringbridge_map_<map>_<field>`` (nested fields joined with
  ``_``; a scalar value is ``ringbridge_map_<map>``); elements of arrays get
  an ``index`` label. Per-CPU maps are summed over CPUs.

The object's global-variable sections (``.bss``, ``.data``, ``.rodata``)
export each integer variable as ``ringbridge_global_<name>`` with a
``section`` label (integer arrays with an ``index`` label).

Types come from the object's BTF and bytes are read by the schema layer's
decoder (:mod:`ringbridge.schema.decoder`: the nodes that pack samples), so
the export follows the C declarations without configuration; members with
nothing to read (pointers, long doubles) are left out. Everything is a
gauge: whether a number only grows is the program's business. A map is read
up to :data:`MAX_ENTRIES` keys per scrape. Prometheus values are floats (exact
up to 2**53); ``GET /v1/stats`` lists the same samples with exact integers
under ``exported``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..errors import ConfigError, RingbridgeError, SchemaError
from ..kernel import libbpf as lb
from ..kernel.globals import DATA_SECTIONS, global_vars, section_of
from ..kernel.userobj import LoadedObject
from ..schema import model
from ..schema.btf import read_type
from ..schema.decoder import Field, TypeDecoder

__all__ = ["MAX_ENTRIES", "MapExporter", "Sample", "build_exporters", "exact_samples"]

log = logging.getLogger("ringbridge.export")

#: Keys read per map per scrape: a runaway hash map must not stall /metrics.
MAX_ENTRIES: Final = 65536

_PERCPU_TYPES: Final = frozenset({5, 6, 10, 21})  # PERCPU_HASH/ARRAY, LRU_PERCPU_HASH, ...


def fields(t: model.Type, path: tuple[str, ...] = (), offset: int = 0) -> list[Field]:
    """The readable scalars of ``t`` laid out from byte ``offset``.

    Members with no value to read (pointers, long doubles...) are left out;
    a type that is nothing but such has no fields.
    """
    try:
        decoder = TypeDecoder.from_type(t, where="export", skip_unsupported=True)
    except SchemaError:
        return []
    return decoder.fields(path, offset)


def _metric_name(prefix: str, path: tuple[str, ...]) -> str:
    name = "_".join((prefix, *path))
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: int | float


class MapExporter(Collector):
    """Reads one map at scrape time and renders its gauges."""

    def __init__(
        self,
        name: str,
        fd: int,
        info: lb.MapInfo,
        key: list[Field],
        value: list[Field],
        *,
        prefix: str,
        doc: str,
        extra_labels: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self._fd = fd
        self._info = info
        self._percpu = info.type in _PERCPU_TYPES
        self._key = key
        self._value = [v for v in value if v.numeric]
        self._prefix = prefix
        self._doc = doc
        self._extra = extra_labels or {}
        self._key_labels = [("_".join(k.path) or "key") for k in key]
        self._warned = False

    def _entries(self) -> Iterator[tuple[bytes, list[bytes]]]:
        info = self._info
        keys: Iterable[bytes]
        keys = lb.map_keys(self._fd, info.key_size, name=self.name)
        for n, key in enumerate(keys):
            if n >= MAX_ENTRIES:
                if not self._warned:
                    log.warning("map export truncated", extra={"map": self.name, "max": n})
                    self._warned = True
                return
            try:
                if self._percpu:
                    values = lb.lookup_percpu(self._fd, key, info.value_size, name=self.name)
                else:
                    values = [lb.map_lookup(self._fd, key, info.value_size, name=self.name)]
            except RingbridgeError:
                continue  # deleted between get_next_key and lookup
            yield key, values

    def samples(self) -> Iterator[Sample]:
        """Every sample now, with exact values (ints stay ints, per-CPU summed)."""
        extra = dict(self._extra)
        for key, values in self._entries():
            key_labels = dict(zip(self._key_labels, (k.label(key) for k in self._key), strict=True))
            for leaf in self._value:
                total: int | float = 0
                for raw in values:
                    total += leaf.number(raw)
                labels = {**extra, **key_labels}
                if leaf.index:
                    labels["index"] = "_".join(map(str, leaf.index))
                yield Sample(_metric_name(self._prefix, leaf.path), labels, total)

    def collect(self) -> Iterator[Metric]:
        # Prometheus values are floats: exact up to 2**53 (/v1/stats has exact ones).
        families: dict[str, GaugeMetricFamily] = {}
        for sample in self.samples():
            fam = families.get(sample.name)
            if fam is None:
                fam = GaugeMetricFamily(sample.name, self._doc, labels=list(sample.labels))
                families[sample.name] = fam
            fam.add_metric(list(sample.labels.values()), sample.value)
        yield from families.values()


def _map_exporter(loaded: LoadedObject, btf: lb.Btf, name: str) -> MapExporter:
    try:
        m = loaded.map(name)
    except RingbridgeError as exc:
        maps = ", ".join(s.name for s in loaded.plan.maps if not s.internal)
        raise ConfigError(f"--export-map {name}: the object has no such map ({maps})") from exc
    if name == loaded.plan.ring_map or m.type in (lb.BPF_MAP_TYPE_RINGBUF,):
        raise ConfigError(f"--export-map {name}: a ring buffer has no entries to export")
    info = lb.map_info(m.fd, name=name)
    if info.btf_value_type_id == 0:
        raise ConfigError(
            f"--export-map {name}: the map has no BTF for its value (declare it with "
            "__type(key, ...) / __type(value, ...) and build with clang -g)"
        )
    value = fields(read_type(btf, info.btf_value_type_id))
    if info.btf_key_type_id:
        key = fields(read_type(btf, info.btf_key_type_id))
    else:
        # No BTF for the key: small ones read as one unsigned integer.
        key = fields(model.Int("", info.key_size, signed=False)) if info.key_size <= 8 else []
    if not [v for v in value if v.numeric]:
        raise ConfigError(f"--export-map {name}: the value has no numbers to export")
    return MapExporter(
        name,
        m.fd,
        info,
        key,
        value,
        prefix=f"ringbridge_map_{name}",
        doc=f"BPF map {name} (one gauge per value field; key fields as labels).",
    )


def _global_exporters(loaded: LoadedObject, btf: lb.Btf) -> list[MapExporter]:
    out = []
    for spec in loaded.plan.maps:
        section = section_of(spec.name)
        if not spec.internal or section not in DATA_SECTIONS:
            continue
        m = loaded.map(spec.name)
        info = lb.map_info(m.fd, name=spec.name)
        value: list[Field] = []
        for var in global_vars(btf, section):
            t = read_type(btf, var.type_id)
            # Integer variables (and arrays of them): structs stay in their maps.
            if isinstance(t, model.Int | model.Enum) or (
                isinstance(t, model.Array) and isinstance(t.elem, model.Int | model.Enum)
            ):
                value.extend(f for f in fields(t, (var.name,), var.offset) if f.numeric)
        if not value:
            continue
        out.append(
            MapExporter(
                spec.name,
                m.fd,
                info,
                [],
                value,
                prefix="ringbridge_global",
                doc=f"BPF global variable ({section}).",
                extra_labels={"section": section},
            )
        )
    return out


def build_exporters(
    loaded: LoadedObject, export_maps: Iterable[str], *, globals_: bool
) -> list[MapExporter]:
    """The exporters for ``--export-map`` names (checked now: ConfigError) and the globals."""
    btf = loaded.btf()
    out = [_map_exporter(loaded, btf, name) for name in export_maps]
    if globals_:
        out.extend(_global_exporters(loaded, btf))
    return out


def exact_samples(exporters: Iterable[Collector]) -> list[dict[str, object]]:
    """``[{"name", "labels", "value"}]`` of every exporter, values exact (``/v1/stats``)."""
    out: list[dict[str, object]] = []
    for e in exporters:
        if isinstance(e, MapExporter):
            out.extend({"name": s.name, "labels": s.labels, "value": s.value} for s in e.samples())
    return out
