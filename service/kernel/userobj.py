"""Load a user's BPF object: size, pin its maps, set globals, attach its programs, drain on demand.

State lives in the maps, so the maps are what is pinned (one pin per map
under the pin dir, ``.`` of global-data map names turned into ``_``), plus
the identity record of :mod:`ringbridge.kernel.pins.meta`. Programs are loaded
afresh at every start and attached (libbpf auto-attach) for as long as the
service runs: a program attached to a tracepoint or fentry cannot outlive its
link without being pinned itself, and re-loading lets a restart re-attach
without a second, per-attach-type code path.

- First start (no pins): the object is loaded with its maps pinned into a
  staging dir, the identity record added, and the dir renamed into place, so
  a pin set appears whole or not at all.
- Later starts: the identity record must name this very object (SHA-256 of
  the file), the set must be complete and every map's size as configured;
  then libbpf re-uses the pinned maps (ring contents, counters and globals
  carry over) and the programs are loaded against them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..closing import Closing
from ..errors import ConfigError, KernelError, PinError
from . import libbpf as lb
from .attach import attach_programs, load_object_programs
from .globals import write_globals
from .objplan import ObjectPlan
from .pins import (
    META_PIN,
    STATE_PINS,
    PinMeta,
    check_pin_dir,
    object_digest,
    refuse_orphan_state,
    staged,
    unpin_hint,
)

__all__ = ["LoadedObject", "load_object"]

log = logging.getLogger("ringbridge.kernel")


class LoadedObject(Closing):
    """A loaded user object: its ring, its maps (pinned), its attached programs.

    The libbpf object stays open while serving: it owns the program fds the
    links and the drain program need, and the BTF the schema and the metrics
    export read.
    """

    def __init__(
        self,
        plan: ObjectPlan,
        pin_dir: Path,
        obj: lb.BpfObject,
        meta: PinMeta,
        links: list[lb.BpfLink],
        *,
        reused: bool,
    ) -> None:
        self.plan = plan
        self.pin_dir = pin_dir
        self.obj = obj
        self.meta = meta
        self.links = links
        self.reused = reused
        self._ring = lb.Fd(os.dup(obj.map(plan.ring_map).fd), plan.ring_map)

    @property
    def ring_fd(self) -> int:
        return self._ring.fd

    @property
    def ring_size(self) -> int:
        return self.plan.ring_size

    @property
    def attached(self) -> list[str]:
        return [link.program for link in self.links if link.active]

    def map(self, name: str) -> lb.BpfMap:
        return self.obj.map(name)

    def btf(self) -> lb.Btf:
        return self.obj.btf()

    @property
    def drain_prog_fd(self) -> int:
        """The drain program's fd (owned by the object; dup it to keep it)."""
        if self.plan.drain_program is None:
            raise ConfigError("no drain program configured (--drain-program)")
        return self.obj.program(self.plan.drain_program).fd

    def drain(self) -> int:
        """Runs the drain program once; returns what it returned (samples, by convention)."""
        name = self.plan.drain_program
        if name is None:
            raise ConfigError("no drain program configured (--drain-program)")
        rc = self.obj.program(name).test_run()
        if rc < 0:
            raise KernelError("run", name, -rc, "the drain program returned an error")
        return rc

    @property
    def closed(self) -> bool:
        return self._ring.closed

    def close(self) -> None:
        for link in self.links:
            link.destroy()
        self.meta.close()
        self._ring.close()
        self.obj.close()

    def __repr__(self) -> str:
        return f"LoadedObject({str(self.plan.path)!r}, pins={str(self.pin_dir)!r})"


def _expected_names(plan: ObjectPlan) -> set[str]:
    return {m.pin_name for m in plan.maps} | {META_PIN}


def _check_existing(plan: ObjectPlan, pin_dir: Path, digest: bytes) -> PinMeta:
    everything = {p.name for p in pin_dir.iterdir()}
    refuse_orphan_state(pin_dir, everything)
    # ringbridge's own state records may sit in the set (optional).
    present = everything - STATE_PINS
    if META_PIN not in present:
        raise PinError(
            f"pin dir {pin_dir} holds pins ringbridge did not make for a BPF object "
            f"({', '.join(sorted(present)[:5])}); refusing to re-use or overwrite them: "
            "use another --pin-dir, or remove them with `ringbridge unpin --pin-dir "
            f"{pin_dir}` if they are the built-in consumer's"
        )
    meta = PinMeta.open(pin_dir / META_PIN)
    try:
        meta.check(digest, plan.path)
        expected = _expected_names(plan)
        if present != expected:
            missing = sorted(expected - present)
            extra = sorted(present - expected)
            raise PinError(
                f"pin dir {pin_dir} does not hold this object's complete pin set "
                f"(missing: {', '.join(missing) or 'none'}; unexpected: "
                f"{', '.join(extra) or 'none'}); " + unpin_hint(pin_dir)
            )
        for m in plan.maps:
            want = plan.sizes.get(m.name)
            if want is None:
                continue
            with lb.obj_get(pin_dir / m.pin_name) as fd:
                have = lb.map_info(fd, name=m.name).max_entries
            if have != want:
                flag = "--ring-size" if m.name == plan.ring_map else f"--map-size {m.name}=SIZE"
                raise PinError(
                    f"map {m.name!r} pinned under {pin_dir} has max_entries {have}, but "
                    f"{want} was asked for: set {flag} to {have}, or " + unpin_hint(pin_dir)
                )
    except BaseException:
        meta.close()
        raise
    return meta


def _open_sized(plan: ObjectPlan, pin_to: Path) -> lb.BpfObject:
    obj = lb.BpfObject.open(plan.path)
    try:
        for name, size in plan.sizes.items():
            obj.map(name).set_max_entries(size)
        for m in obj.maps():
            # libbpf re-uses a map already pinned at its pin path (after a
            # compatibility check) and pins a newly created one there.
            m.set_pin_path(pin_to / plan.map(m.name).pin_name)
    except BaseException:
        obj.close()
        raise
    return obj


def load_object(plan: ObjectPlan, pin_dir: Path, *, attach: bool = True) -> LoadedObject:
    """Loads the planned object with its maps pinned under ``pin_dir`` (see the module doc)."""
    check_pin_dir(pin_dir)
    digest = object_digest(plan.path)
    reused = pin_dir.is_dir() and any(pin_dir.iterdir())
    meta: PinMeta | None = None
    obj: lb.BpfObject | None = None
    links: list[lb.BpfLink] = []
    try:
        if reused:
            meta = _check_existing(plan, pin_dir, digest)
            obj = _open_sized(plan, pin_dir)
            load_object_programs(obj, plan.programs)
        else:
            with staged(pin_dir) as staging:
                obj = _open_sized(plan, staging)
                load_object_programs(obj, plan.programs)
                meta = PinMeta.create(digest, staging / META_PIN)
            meta.path = pin_dir / META_PIN
        # Before anything runs: the programs may act on these from their first event.
        write_globals(obj, plan.globals)
        if attach:
            links = attach_programs(obj, plan.programs)
        loaded = LoadedObject(plan, pin_dir, obj, meta, links, reused=reused)
    except BaseException:
        for link in links:
            link.destroy()
        if meta is not None:
            meta.close()
        if obj is not None:
            obj.close()
        raise
    log.info(
        "BPF object loaded",
        extra={
            "object": str(plan.path),
            "ring_map": plan.ring_map,
            "pins_reused": reused,
            "attached": loaded.attached,
        },
    )
    return loaded
