"""The kernel sides the service can feed, behind one interface.

:class:`Backend` (:mod:`.base`) is what every kind offers; :func:`open_backend`
(:mod:`.selection`) picks the kind from the settings. One module per kind:
:mod:`.builtin` (the built-in consumer), :mod:`.userobject` (a user's
object), :mod:`.ringpin` (a ring another loader pinned).
"""

from __future__ import annotations

from .base import Backend, SeqStore
from .selection import drain_mode, is_builtin_object, open_backend

__all__ = ["Backend", "SeqStore", "drain_mode", "is_builtin_object", "open_backend"]
