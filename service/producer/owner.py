"""Who fills a region of the ring and hears how it ended (:class:`RegionOwner`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ..errors import RingbridgeError
from ..wire import Ack

if TYPE_CHECKING:
    from .regions import Region

__all__ = ["Part", "RegionOwner"]


class RegionOwner(Protocol):
    """Who fills a region and hears how it ended (all calls on the loop's thread)."""

    @property
    def wanted(self) -> bool:
        """Whether the region may still publish as data (False: client gone, gave up)."""
        ...

    def region_published(self, region: Region, ack: Ack) -> None:
        """The region's records are in the ring (``producer_pos`` passed them)."""

    def region_failed(self, region: Region, exc: RingbridgeError) -> None:
        """The region ends as DISCARD for ``exc`` (deadline, hook, shutdown); an owner
        still receiving into it must not touch its memory any more."""

    @property
    def arriving(self) -> bool:
        """Whether more of the region's bytes wait, unread, in its socket now."""
        ...

    def region_evict(self, region: Region) -> None:
        """Copy what arrived out of the region now and receive the rest elsewhere:
        the region becomes DISCARD on return (its memory is no longer the owner's)
        and its credit is the owner's again, to pay for the copy."""


#: One batch of several that follow one another in a region (frames read
#: ahead together): its owner, ring bytes, records and payload bytes.
Part = tuple[RegionOwner, int, int, int]
