"""What a map fd given as a user ring buffer is: checked once, for every way in.

The library (:mod:`ringbridge.ring`) and the ``--ring-pin`` backend both take
a map from someone else (an fd, a pin, a loaded object). Before anything maps
or writes it, it must be a ``BPF_MAP_TYPE_USER_RINGBUF``: a kernel ring
buffer (``BPF_MAP_TYPE_RINGBUF``) maps the other way round, and writing into
an array would corrupt someone's state.

The sample type's BTF of such a map comes from the kernel: the map's own BTF
when its loader created it with one, else the BTF of a loaded program that
uses the map (libbpf creates ring buffer maps without BTF, but every program
of the object carries the object's BTF, sample struct included).
"""

from __future__ import annotations

import errno
from pathlib import Path

from ..errors import ConfigError, KernelError, MapTypeError
from . import libbpf as lb

__all__ = ["check_user_ringbuf", "ring_btf"]


def check_user_ringbuf(fd: lb.FdLike, where: str, *, what: str = "the fd") -> lb.MapInfo:
    """The map's info, or :class:`MapTypeError` naming the map and its type.

    ``where`` says how the map was reached (``--ring-pin PATH``, ``fd 7``...),
    ``what`` names the handle in a refusal (``the pin``).
    """
    num = fd.fd if isinstance(fd, lb.Fd) else fd
    try:
        # Info by fd answers for programs and links too: fdinfo says what it is.
        fdinfo = Path(f"/proc/self/fdinfo/{num}").read_text()
    except FileNotFoundError as exc:
        raise KernelError("open", where, errno.EBADF, "no such open fd") from exc
    if "map_type:" not in fdinfo:
        raise MapTypeError(f"{where}: {what} is not a BPF map (a program, link or other file?)")
    info = lb.map_info(fd, name=where)
    if info.type != lb.BPF_MAP_TYPE_USER_RINGBUF:
        raise MapTypeError(
            f"{where}: map {info.name!r} (id {info.id}) is a {lb.map_type_name(info.type)}, "
            "not a BPF_MAP_TYPE_USER_RINGBUF"
        )
    return info


def ring_btf(info: lb.MapInfo, where: str) -> lb.KernelBtf:
    """The BTF that describes the samples of the ring ``info`` (see the module doc)."""
    if info.btf_id:
        return lb.KernelBtf.load(info.btf_id)
    for prog_id in lb.prog_ids():
        try:
            with lb.prog_by_id(prog_id) as fd:
                prog = lb.prog_info(fd, map_ids=True)
        except KernelError:
            continue  # unloaded meanwhile
        if info.id in prog.map_ids and prog.btf_id:
            return lb.KernelBtf.load(prog.btf_id)
    raise ConfigError(
        f"{where}: the ring {info.name!r} has no BTF, and no loaded program that uses "
        "it carries any (build the loader's object with clang -g)"
    )
