"""What decoding a payload holds in memory beyond the payload, charged to admission.

A binary batch is checked in place (C, no object per sample): its records
are its own bytes, nothing more. A JSON batch is not: msgspec builds an
object per sample and per value, the packer a record per sample, and all of
it exists until the decode ends. Measured here (Python 3.11, msgspec,
4 MiB bodies, the built-in struct; ``tracemalloc`` peak beyond the body):

====================================  ===========  ================
samples                               per sample   x body bytes
====================================  ===========  ================
``{"kind", "flags", "value"}``        268 B        6.1
``{"kind"}``                          235 B        18.6
``{}``                                237 B        60
``{"data": <16 bytes>}`` (raw path)   442 B        11.9
``{"data": <3000 bytes>}``            6.3 KiB      1.6
====================================  ===========  ================

So a fixed factor of the body cannot be an honest charge (it runs from 1.6
to 60), but a charge per JSON object and per value can:
:func:`decode_cost` counts ``{`` (one per sample and nested struct), ``,``
(one per further member or array element) and the text's length -- three
scans in C -- and charges :data:`OBJECT_BYTES` (:data:`RAW_OBJECT_BYTES`
when raw ``"data"`` samples may be present) per object,
:data:`ELEMENT_BYTES` per comma and :data:`TEXT_FACTOR` per byte of text.
That covers every row above (e.g. 442 B for a ``{"kind", "flags",
"value"}`` sample that measured 268 B). The charge is held for the length
of the decode only; big decodes run one at a time (they hold the GIL
anyway), so a queue of bodies waiting to be decoded holds their bodies'
credit, not their decodes'.
"""

from __future__ import annotations

from typing import Final

__all__ = ["ELEMENT_BYTES", "OBJECT_BYTES", "RAW_OBJECT_BYTES", "TEXT_FACTOR", "decode_cost"]

OBJECT_BYTES: Final = 256
RAW_OBJECT_BYTES: Final = 512
ELEMENT_BYTES: Final = 32
TEXT_FACTOR: Final = 2


def decode_cost(json_text: bytes | str) -> int:
    """Bytes a JSON batch's decode may hold beyond its text (see the module doc)."""
    if isinstance(json_text, str):
        objects, commas = json_text.count("{"), json_text.count(",")
        raw = '"data"' in json_text
    else:
        objects, commas = json_text.count(b"{"), json_text.count(b",")
        raw = b'"data"' in json_text
    per_object = RAW_OBJECT_BYTES if raw else OBJECT_BYTES
    return per_object * objects + ELEMENT_BYTES * commas + TEXT_FACTOR * len(json_text)
