"""One reserved record of a user ring buffer: :class:`Sample`."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol

__all__ = ["Sample"]


class _Owner(Protocol):
    def submit(self, sample: Sample) -> None: ...
    def discard(self, sample: Sample) -> None: ...


class Sample:
    """Space for one record, reserved in the ring: fill :attr:`view`, then
    :meth:`submit` (the kernel gets it) or :meth:`discard` (the kernel skips it).

    ``view`` is a writable, 8-byte-aligned ``memoryview`` of exactly the
    reserved size, straight into the ring: no copy. It is released once the
    sample is submitted or discarded (the kernel may consume the bytes from
    then on: write nothing through a view kept elsewhere).

    Until it is finished the record is BUSY: the kernel stops at it, and
    records reserved after it wait behind it (as with libbpf's
    ``user_ring_buffer__reserve``). As a context manager it gives the view,
    and submits on a normal exit, discards on an exception::

        with ring.reserve(16) as view:
            struct.pack_into("<IIQ", view, 0, kind, 0, value)
    """

    __slots__ = ("_done", "_owner", "pos", "size", "view")

    def __init__(self, owner: _Owner, pos: int, size: int, view: memoryview) -> None:
        self._owner = owner
        #: The record's position in the ring (its header's producer_pos).
        self.pos = pos
        #: Payload bytes reserved.
        self.size = size
        self.view = view
        self._done = False

    @property
    def done(self) -> bool:
        """Submitted or discarded."""
        return self._done

    def submit(self) -> None:
        """Hands the record to the kernel (InvalidBatchError if already finished)."""
        self._owner.submit(self)

    def discard(self) -> None:
        """Marks the record DISCARD: the kernel skips it, its space is freed."""
        self._owner.discard(self)

    def _finish(self) -> None:
        """Called by the ring when it finishes the record: the view goes."""
        self._done = True
        try:  # noqa: SIM105 -- per record: cheaper than contextlib.suppress
            self.view.release()
        except BufferError:
            pass  # a view someone exported (numpy...) stays theirs to drop

    def __len__(self) -> int:
        return self.size

    def __enter__(self) -> memoryview:
        return self.view

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._done:
            return  # finished inside the block
        if exc_type is None:
            self.submit()
        else:
            self.discard()

    def __buffer__(self, flags: int) -> memoryview:
        # Python >= 3.12 (PEP 688): memoryview(sample), struct.pack_into(fmt, sample, ...).
        return self.view

    def __repr__(self) -> str:
        state = "finished" if self._done else "reserved"
        return f"Sample(pos={self.pos}, size={self.size}, {state})"
