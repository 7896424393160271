"""Claims: ring space written in place and published later, in claim order.

libbpf's ``user_ring_buffer__reserve`` publishes a record BUSY at once and
clears BUSY on submit: the kernel stops at it meanwhile (head of line), and
the producer must know the record's length and write its header first. A
*claim* is the other way round: :meth:`Claims.claim` takes ``nbytes`` of
space after every earlier claim and publishes nothing. Whatever is written
there -- several records at once, a body arriving from a socket, a frame
being unmasked -- stays invisible to the kernel until :meth:`Claims.publish`
moves ``producer_pos`` past it with one release store (paired with
``smp_load_acquire(&rb->producer_pos)`` in ``__bpf_user_ringbuf_peek``).

The rules, which keep the ring from ever being poisoned:

- claims are published in claim order, each as the whole records written
  into it -- or, when they must never be read (invalid, abandoned), covered
  by DISCARD records first (:meth:`Claims.discard_claim`; the kernel skips
  them, after checking their sizes, hence one per 16 MiB at most);
- claimed space counts as used: room is what is left after the claims;
- claims not published yet can be given back (:meth:`Claims.unclaim`), from
  a position on: nothing of them was ever visible;
- a producer that dies holding claims leaves nothing behind: the next one
  starts at ``producer_pos`` and writes over them (no BUSY record to
  recover);
- :meth:`~ringbridge.ring.buffer.UserRingBuffer.reserve` and
  ``commit_batch`` publish at once, so they refuse to run while claims are
  pending (their records would land behind unpublished space).

The ringbridge service's producer (:mod:`ringbridge.producer.regions`)
writes every batch through claims.
"""

from __future__ import annotations

import struct

from ..core import ring as core
from ..errors import InvalidBatchError
from .mapped import MappedRing

__all__ = ["Claims"]

_HDR = struct.Struct("<II")


class Claims(MappedRing):
    """The claim operations of a mapped ring (see the module docstring)."""

    @property
    def claimed_pos(self) -> int:
        """End of the space claimed so far (``producer_pos`` when nothing is)."""
        return self._claimed

    def claim(self, nbytes: int) -> int:
        """Claim ``nbytes`` (a positive multiple of 8) after every earlier claim;
        its ring position. :class:`~ringbridge.errors.RingFullError` when the ring
        lacks the room now (nothing claimed then)."""
        self._writable()
        if nbytes <= 0 or nbytes % 8 or nbytes > self.size:
            raise InvalidBatchError(
                f"a claim is a positive multiple of 8 bytes up to the ring's {self.size}, "
                f"not {nbytes}"
            )
        self._require_room(nbytes, "claim")
        pos = self._claimed
        self._claimed = pos + nbytes
        return pos

    def claim_view(self, pos: int, nbytes: int) -> memoryview:
        """The ``nbytes`` of ring space at ``pos``: contiguous even across the
        ring's end (the data area is mapped twice); valid until close."""
        off = pos & self._mask
        return self._data[off : off + nbytes]

    def claim_address(self, pos: int) -> int:
        """The address of ring position ``pos`` in this mapping (for native code)."""
        self._check_open()
        return self._data_addr + (pos & self._mask)

    def discard_claim(self, pos: int, nbytes: int) -> None:
        """Cover the claimed, unpublished ``[pos, pos + nbytes)`` with DISCARD
        records; plain stores, ordered before the kernel by :meth:`publish`."""
        self._check_open()
        if not (self._prod <= pos and pos + nbytes <= self._claimed):
            raise InvalidBatchError(f"[{pos}, {pos + nbytes}) is not claimed, unpublished space")
        for off, word in core.discard_headers(nbytes):
            _HDR.pack_into(self._data, (pos + off) & self._mask, word, 0)

    def unclaim(self, pos: int) -> None:
        """Give back every claim from ``pos`` on (none of it was published)."""
        self._check_open()
        if not self._prod <= pos <= self._claimed or pos % 8:
            raise InvalidBatchError(
                f"cannot unclaim from {pos}: producer_pos is {self._prod}, "
                f"claimed up to {self._claimed}"
            )
        self._claimed = pos

    def publish(self, end: int) -> None:
        """Publish every claim up to ``end`` (a claim boundary) with one release
        store of ``producer_pos``: ``[producer_pos, end)`` must hold whole records
        by now (validated data, or DISCARD records)."""
        self._writable()
        if not self._prod < end <= self._claimed or end % 8:
            raise InvalidBatchError(
                f"cannot publish up to {end}: producer_pos is {self._prod}, "
                f"claimed up to {self._claimed}"
            )
        self._prod = end
        # Release: every header and payload byte of the claims is visible to
        # the kernel before it sees the new producer_pos.
        self._ops.store_release_u64(self._prod_addr, end)

    def _no_claims(self, what: str) -> None:
        if self._claimed != self._prod:
            raise InvalidBatchError(
                f"{what} while {self._claimed - self._prod} claimed bytes are unpublished: "
                "publish them first (records land after every claim)"
            )
