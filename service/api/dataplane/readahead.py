"""Binary frames read ahead into the ring space of the frame before them.

A client that streams keeps frames waiting in the socket behind the one
being read. Read one at a time, each costs a read, a claim, a publish and a
kick of its own; read ahead, the frames that wait come in with the first
one's payload, in one read, straight into ring space:

- a binary frame of that shape (below) received in place claims, besides
  its own payload, as much as waits in the socket past it, up to
  ``ws_readahead_bytes`` and the window's room for frames, paid by
  admission credit taken with its own (none when frames wait in line for
  credit: they go first);
- once its payload is in, what came after it is scanned in place
  (``rb_ws_scan``, :meth:`ringbridge.schema.binary.InPlace.scan`): each
  whole frame of the one shape whose payload lands 8-aligned (FIN, binary,
  masked, an 8-byte header: payloads of 126..65535 bytes, a multiple of 8)
  is unmasked and validated where it lies, and its header becomes an empty
  DISCARD record: the frame is ring records as it lies, one region split
  off the claim (:meth:`ringbridge.producer.writes.Writes.split`) with its
  own credit carved from the claim's, answered like any frame; an invalid
  one becomes DISCARD records and its error ack;
- a frame of that shape still arriving is taken (numbered, owed an ack)
  and goes on arriving there, like the first -- the claim grows for it
  when it does not fit, if nothing was claimed after it
  (:meth:`ringbridge.producer.writes.Writes.extend`): a client that keeps
  streaming stays in one read-ahead;
- anything else -- a control frame, text, a fragment, another header
  size, a frame that does not fit, more frames than the window takes, a
  stream closing -- ends the read-ahead: its bytes are handed back to the
  connection's staging buffer (:meth:`DataPlaneProtocol.unread`) for the
  general path, and the space left is given back (or published as one
  DISCARD record when a later claim follows it).

What the kernel sees is what a frame read alone would give it, plus the
empty DISCARD records (8 bytes each, skipped): seqs, acks, their order,
credit, the window and every refusal are those of the general path.
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING, Final

from ...core.ring import DISCARD_BIT, HDR_SIZE
from ...errors import OverloadedError, RingbridgeError
from ...producer.admission import Credit
from ...producer.owner import Part
from ...producer.regions import Region
from ..keepalive import queued_bytes

if TYPE_CHECKING:
    from .frame import Frame
    from .stream import Stream

__all__ = ["EMPTY_DISCARD", "MAX_SCANNED", "MIN_SCANNED", "claim", "received", "take_following"]

#: The payloads of the frames taken read ahead: a 16-bit length (an 8-byte
#: header), a multiple of 8.
MIN_SCANNED: Final = 128
MAX_SCANNED: Final = 65535 // 8 * 8

#: A frame header read ahead into ring space, once its payload is valid: an
#: empty DISCARD record (length 0), 8 bytes the kernel skips.
EMPTY_DISCARD: Final = struct.pack("<II", DISCARD_BIT, 0)


def received(s: Stream, frame: Frame, region: Region, counts: tuple[int, int] | None) -> None:
    """``frame``, validated in place (``counts``; None: refused), is whole at the
    start of ``region``, which holds more read ahead: take the frames behind
    it, answer, publish."""
    p = s.rt.producer
    head, whole = frame.head, frame.head + frame.nbytes
    assert region.credit is not None
    refused: list[tuple[Frame, RingbridgeError]] = []
    run = _Run()
    if counts is not None:
        if head:
            p.view(region)[:head] = EMPTY_DISCARD
        frame.credit = None  # the run's, carved when it is split off
        run.add(frame, whole, *counts, region.started)
    else:
        frame.credit = region.credit.carve(whole)
        mine = p.split(region, whole, frame, frame.credit, region.started)
        _refuse(s, frame, mine, head, refused)
    take_following(s, region, s.c.got - whole, refused, run)
    # Answered once every frame read ahead is taken (an answer may resume
    # reading, which must not pass them).
    for fr, exc in refused:
        s.refused(fr, exc)
    p.publish()


class _Run:
    """Valid frames that follow one another at the start of a claim: ready as
    one region of several batches (one split, one credit, one publish step;
    each frame acked on its own, see ``Writes.ready(parts=...)``)."""

    __slots__ = ("count", "frames", "nbytes", "parts", "payload", "started")

    def __init__(self) -> None:
        self.started = 0.0
        self.clear()

    def clear(self) -> None:
        self.frames: list[Frame] = []
        self.parts: list[Part] = []
        self.nbytes = self.count = self.payload = 0

    def add(self, fr: Frame, whole: int, count: int, payload: int, started: float) -> None:
        if not self.parts:
            self.started = started
        self.frames.append(fr)
        self.parts.append((fr, whole, count, payload))
        self.nbytes += whole
        self.count += count
        self.payload += payload


def _flush(s: Stream, region: Region, run: _Run) -> Region | None:
    """``run``'s frames, at the start of ``region``, ready as a region of their
    own (published at the caller's ``publish``); what is left of ``region``
    (None: the run took it all)."""
    if not run.parts:
        return region
    p = s.rt.producer
    first = run.frames[0]
    assert region.credit is not None
    if run.nbytes < region.nbytes:
        mine = p.split(region, run.nbytes, first, region.credit.carve(run.nbytes), run.started)
        rest: Region | None = region
    else:  # the claim ends with it
        mine, rest = region, None
        mine.owner = first
    for fr in run.frames:
        fr.region = mine
    parts = run.parts if len(run.parts) > 1 else None
    p.ready(mine, run.count, run.payload, publish=False, parts=parts)  # acked when published
    run.clear()
    return rest


def _refuse(
    s: Stream,
    frame: Frame,
    region: Region,
    head: int,
    refused: list[tuple[Frame, RingbridgeError]],
) -> None:
    """``frame``'s own ``region`` (its payload ``head`` bytes in) is refused:
    DISCARD and the frame put in ``refused``, both at the caller's ``publish``."""
    p = s.rt.producer
    refused.append((frame, s.c.p.in_place.refusal(bytes(p.view(region)[head:]))))
    frame.region = None
    p.discard(region, publish=False)


def claim(s: Stream, frame: Frame, n: int, credit: Credit, at: float | None) -> Region | None:
    """Ring space for ``frame``'s ``n`` payload bytes (the shape taken read ahead:
    a client's frames tend to be alike, and frames of another shape would
    only be read ahead to be handed back), with room for the frames waiting
    behind it when there are some (see the module docstring); None when the
    ring has no room for the payload itself."""
    p = s.rt.producer
    extra = _wanted(s, n)
    if extra:
        try:
            more = p.admission.take(extra, credit.deadline)
        except OverloadedError:
            extra = 0
        else:
            credit.absorb(more)
            region = p.claim(n + extra, credit, frame, at)
            if region is not None:
                return region
            credit.resize(n)
    return p.claim(n, credit, frame, at)


def _wanted(s: Stream, n: int) -> int:
    """Bytes to claim past a frame of ``n`` payload bytes (0: none): what waits,
    when no other claim is in flight (a frame only partly there then grows
    the claim as it arrives, ``_extend``); else whole frames only."""
    frames = _room(s, 0)
    if not frames:
        return 0
    beyond = queued_bytes(s.fd) + s.c.staged - n
    if beyond < 2 * HDR_SIZE:
        return 0
    if s.rt.producer.regions_in_flight:
        return _whole(s, beyond, HDR_SIZE + n, frames)
    return _all(s, beyond, frames)


def _room(s: Stream, taking: int) -> int:
    """How many frames may be read ahead once the stream takes ``taking`` more
    (the window's room; none while frames wait for credit or a fragmented
    message is being received, or when the stream closes)."""
    if not s.readahead or s.frag is not None or s.closing or s.stopping or s.line.waiting:
        return 0
    return max(0, s.window - len(s.pending) - taking)


def _all(s: Stream, beyond: int, frames: int) -> int:
    """Bytes to claim for all that waits ``beyond`` the frames claimed so far
    (frames partly there too), at most ``frames`` frames and ``ws_readahead_bytes``."""
    return max(0, min(beyond // 8 * 8, s.readahead, frames * (HDR_SIZE + MAX_SCANNED)))


def _whole(s: Stream, beyond: int, unit: int, frames: int) -> int:
    """Bytes to claim for what waits ``beyond`` the frames claimed so far: as
    many whole frames of ``unit`` bytes as that holds (a client's frames
    tend to be alike: no space is claimed for a frame only partly there,
    which would be handed back), at most ``frames`` and ``ws_readahead_bytes``."""
    return max(0, min(beyond // unit, frames, s.readahead // unit)) * unit


def _extend(s: Stream, region: Region, whole: int, got: int) -> None:
    """Room in ``region`` for the frame of ``whole`` bytes arriving there (``got``
    of them in) that does not fit, and for those waiting behind it: the claim
    grows when nothing was claimed after it (else the frame goes the general
    way)."""
    if not s.readahead or s.line.waiting or region.credit is None:
        return
    frames = _room(s, 1)
    # All that waits, not whole frames only: the claim grows again for the
    # next frame (it is the last claim, or it would not grow at all).
    more = _all(s, queued_bytes(s.fd) - (whole - got), frames) if frames else 0
    grow = whole - region.nbytes + more
    p = s.rt.producer
    try:
        credit = p.admission.take(grow, region.credit.deadline)
    except RingbridgeError:  # no free credit; stopping
        return
    try:
        if p.extend(region, credit):
            return
    except RingbridgeError:  # stopping
        pass
    credit.release()


def take_following(
    s: Stream,
    region: Region,
    got: int,
    refused: list[tuple[Frame, RingbridgeError]],
    run: _Run | None = None,
) -> None:
    """``region``: the claim's space from a frame just received whole (``run``:
    the valid frames at its start, not split off yet), ``got`` of its bytes
    arrived past them: take the frames there; the next one goes on arriving
    there, or the read-ahead ends. The caller answers the frames put in
    ``refused`` and publishes, in that order."""
    from .frame import Frame  # frame.py imports this module

    c = s.c
    p = s.rt.producer
    ip = c.p.in_place
    run = run if run is not None else _Run()
    cap = 0 if s.closing or s.stopping or s.frag is not None else s.window - len(s.pending)
    k, stop, nxt = (0, 0, 0)
    if cap > 0 and got:
        k, stop, nxt = ip.scan(p.address(region) + run.nbytes, got, s.scan_max, cap)
    frames = ip.frames
    rest: Region | None = region
    for i in range(k):
        f = frames[i]
        whole = HDR_SIZE + f.length
        fr = Frame(s, s.frames, False, f.length, f.key, None)
        s.frames += 1
        s.read_ahead += 1
        s.pending.append(fr)
        started = fr.arrival.at if fr.arrival is not None else time.perf_counter()
        if f.verdict == 0:
            run.add(fr, whole, f.result.count, f.result.payload_bytes, started)
            continue
        # An invalid frame: the run before it goes first, then it alone.
        assert rest is not None
        rest = _flush(s, rest, run)
        assert rest is not None and rest.credit is not None
        if whole < rest.nbytes:
            fr.credit = rest.credit.carve(whole)
            mine = p.split(rest, whole, fr, fr.credit, started)
        else:  # the claim ends with it
            mine, rest = rest, None
            mine.owner = fr
        _refuse(s, fr, mine, HDR_SIZE, refused)
    if rest is None:  # an invalid frame ended the claim: nothing was scanned past it
        assert not run.parts
        return
    rest = _flush(s, rest, run)
    if rest is None:
        return
    left = got - stop
    if nxt > HDR_SIZE and left < nxt and len(s.pending) < s.window:
        if nxt > rest.nbytes:
            _extend(s, rest, nxt, left)
        if nxt <= rest.nbytes:
            _arriving(s, rest, nxt, left)
            return
    if left:
        c.unread(p.view(rest)[:left])
    p.give_back(rest)


def _arriving(s: Stream, region: Region, whole: int, got: int) -> None:
    """The next frame, ``got`` of its ``whole`` bytes in ``region``: taken, and
    received there like the first."""
    from .frame import Frame

    c = s.c
    view = s.rt.producer.view(region)
    assert region.credit is not None
    key = int.from_bytes(view[4:HDR_SIZE], "little")
    fr = Frame(s, s.frames, False, whole - HDR_SIZE, key, region.credit)
    s.frames += 1
    s.read_ahead += 1
    s.pending.append(fr)
    fr.head = HDR_SIZE
    fr.region = region
    region.owner = fr
    fr.receiving = True
    # What is still staged comes first (the claim grew past what one read took).
    c.receive(view, whole, fr.in_ring, region.nbytes, got)
