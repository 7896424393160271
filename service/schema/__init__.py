"""The schema layer: what a sample is, and how client input becomes ring records.

* :mod:`.model` -- the BTF type model (pure data);
* :mod:`.btf` -- reads it from a BTF handle through the libbpf ctypes layer;
* :mod:`.compiler` + :mod:`.kinds` -- one decoder/packer per BTF kind,
  compiled into a node tree that decodes JSON, packs the exact C layout,
  reads bytes back and writes the JSON Schema;
* :mod:`.jsoncodec` -- JSON batches and WebSocket frames -> records
  (:class:`SampleCodec`, the one entry the API layer uses);
* :mod:`.binary` -- binary batches, validated as they are;
* :mod:`.decoder` -- bytes -> values of any BTF type (map keys and values);
* :mod:`.header` -- a C header -> an object with all its types in BTF (clang);
* :mod:`.sources` -- named types looked up across BTF sources in order (the
  object's, ``--sample-btf`` files, a ``--sample-header``);
* :mod:`.layout` -- do two definitions agree; does a type fit a map's declared value.

Entry points: ``SampleCodec.from_object(path, type_name)``,
``SampleCodec.from_btf(btf, type_name, where=...)`` (any BTF handle, e.g. a
loaded map's kernel BTF), ``SampleCodec.raw_only()`` (no sample type), and
``TypeDecoder.from_btf(btf, type_id)`` for reading map keys and values, and
``TypeSources.open(primary=..., btf_files=..., header=...)`` whose ``codec()``
and ``decoder()`` find a type wherever the user keeps it.

It sits above the kernel binding (it reads BTF through it) and below the API.
"""

from .batch import EncodedBatch
from .binary import validate_binary_batch
from .decoder import TypeDecoder
from .header import HeaderOptions, HeaderType, compile_header, header_types
from .jsoncodec import DEFAULT_SAMPLE_TYPE, SampleCodec, frame_id
from .layout import check_map_value, declared_value, layout_difference
from .sources import Found, TypeSources

__all__ = [
    "DEFAULT_SAMPLE_TYPE",
    "EncodedBatch",
    "Found",
    "HeaderOptions",
    "HeaderType",
    "SampleCodec",
    "TypeDecoder",
    "TypeSources",
    "check_map_value",
    "compile_header",
    "declared_value",
    "frame_id",
    "header_types",
    "layout_difference",
    "validate_binary_batch",
]
