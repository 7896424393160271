"""The ordering helper compiles to the instructions its comments promise.

The producer's correctness on arm64 rests on bpf/native.c emitting
store-release / load-acquire there (x86-64 needs only plain moves, TSO). We
cannot run arm64 here, so we compile the helper for both targets and read the
instructions: a release store that became a plain ``str`` would fail this.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ringbridge.kernel.native import ops

NATIVE_C = Path(__file__).resolve().parents[2] / "bpf" / "native.c"


def _functions(target: str) -> dict[str, str]:
    clang = shutil.which("clang")
    if clang is None:
        pytest.fail("clang is required (make setup installs it)")
    asm = subprocess.run(
        [clang, f"--target={target}", "-ffreestanding", "-O2", "-S", "-o", "-", str(NATIVE_C)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    bodies: dict[str, str] = {}
    for m in re.finditer(r"^(rb_\w+):.*?$(.*?)^\.Lfunc_end", asm, re.M | re.S):
        bodies[m.group(1)] = m.group(2)
    return bodies


def test_arm64_uses_release_and_acquire_instructions() -> None:
    f = _functions("aarch64-linux-gnu")
    assert re.search(r"\bstlr\s+x1", f["rb_store_release_u64"])
    assert re.search(r"\bstlr\s+w1", f["rb_store_release_u32"])
    assert re.search(r"\bldar\s+x0", f["rb_load_acquire_u64"])
    assert re.search(r"\bldar\s+w0", f["rb_load_acquire_u32"])
    # seq_cst exchange: acquire+release exclusive pair (or an LSE swpal).
    xchg = f["rb_xchg_u32"]
    assert ("ldaxr" in xchg and "stlxr" in xchg) or "swpal" in xchg
    for body in f.values():
        assert not re.search(r"\bstr\s", body), "a plain store would not order the publish"
    # The kernel ring consumer's store-load barrier (consumer_pos, then producer_pos).
    assert re.search(r"\bdmb\s+ish\b", f["rb_fence_seq_cst"])


def test_x86_64_plain_moves_and_locked_exchange() -> None:
    f = _functions("x86_64-linux-gnu")
    assert re.search(r"\bmovq\s+%rsi, \(%rdi\)", f["rb_store_release_u64"])
    assert re.search(r"\bmovq\s+\(%rdi\), %rax", f["rb_load_acquire_u64"])
    # xchg with memory is implicitly locked: the full barrier the
    # producer_waiting handshake needs (store-load order).
    assert re.search(r"\bxchgl\s+%eax, \(%rdi\)", f["rb_xchg_u32"])
    # A store-load barrier needs mfence (or a locked op) even under TSO.
    assert re.search(r"\bmfence\b|\block\b", f["rb_fence_seq_cst"])


def test_the_service_uses_the_built_helper(native_lib_path: Path) -> None:
    o = ops()
    assert o.path == native_lib_path and o.ordered
    cell = (ctypes.c_uint64 * 2)()
    addr = ctypes.addressof(cell)
    o.store_release_u64(addr + 8, 0xDEADBEEF_00000001)
    assert cell[1] == 0xDEADBEEF_00000001 and o.load_acquire_u64(addr + 8) == cell[1]
    o.store_release_u32(addr, 7)
    assert o.load_acquire_u32(addr) == 7
    assert o.xchg_u32(addr, 9) == 7 and o.load_acquire_u32(addr) == 9
    o.fence()  # bound to the library's rb_fence_seq_cst (a missing symbol fails above)
    assert o.fence.__name__ == "rb_fence_seq_cst"
