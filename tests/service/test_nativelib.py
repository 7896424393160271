"""The one loader of our C helpers: found, opened on first use, typed; what a
missing helper costs (a fallback, or a ConfigError that names it)."""

from __future__ import annotations

import ctypes
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ringbridge.errors import ConfigError
from ringbridge.nativelib import DRAINER, ORDERING, VALIDATE, NativeLibrary


def _library(monkeypatch: pytest.MonkeyPatch, path: Path) -> NativeLibrary:
    monkeypatch.setenv("RINGBRIDGE_TEST_LIB", str(path))
    return NativeLibrary(path.name, "RINGBRIDGE_TEST_LIB", "test helper")


def test_functions_are_typed_and_called_the_declared_way(monkeypatch: pytest.MonkeyPatch) -> None:
    if not VALIDATE.built():
        pytest.fail(f"{VALIDATE.path} is not built: run make -C bpf")
    lib = _library(monkeypatch, VALIDATE.path)
    held = lib.function("rb_json_dup_keys", ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t)
    released = lib.function("rb_json_dup_keys", ctypes.c_int, ctypes.c_char_p, releases_gil=True)
    assert not lib._handles  # declaring opens nothing
    fn = held.get()
    assert fn is held.get()  # resolved once
    assert (fn.restype, fn.argtypes) == (ctypes.c_int, [ctypes.c_char_p, ctypes.c_size_t])
    assert released.get().argtypes == [ctypes.c_char_p]
    assert isinstance(lib.open(releases_gil=False), ctypes.PyDLL)
    assert not isinstance(lib.open(releases_gil=True), ctypes.PyDLL)


def test_what_is_missing_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = _library(monkeypatch, tmp_path / "libnothere.so").function("rb_x", None)
    with pytest.raises(ConfigError, match=r"test helper .*libnothere\.so is missing; run 'make"):
        missing.get()
    junk = tmp_path / "libjunk.so"
    junk.write_text("not an ELF file")
    with pytest.raises(ConfigError, match=r"libjunk\.so cannot be loaded \(.*\); run 'make"):
        _library(monkeypatch, junk).function("rb_x", None).get()
    no_symbol = _library(monkeypatch, VALIDATE.path).function("rb_no_such_function", None)
    with pytest.raises(ConfigError, match="has no rb_no_such_function: it was built from older"):
        no_symbol.get()


def test_find_falls_back_and_says_so_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fn = _library(monkeypatch, tmp_path / "libnothere.so").function("rb_x", None)
    with caplog.at_level(logging.WARNING, logger="ringbridge.native"):
        assert fn.find("the slow way") is None
        assert fn.find("the slow way") is None
    (record,) = caplog.records
    assert record.__dict__["fallback"] == "the slow way"
    assert "libnothere.so is missing" in record.__dict__["error"]


def test_the_table_names_what_the_build_installs() -> None:
    makefile = (Path(__file__).resolve().parents[2] / "bpf" / "Makefile").read_text()
    for lib in (ORDERING, VALIDATE, DRAINER):
        assert lib.filename in makefile
        assert lib.built(), f"{lib.path} is not built: run make -C bpf"


_WITHOUT_HELPERS = """
import ctypes, json, logging, platform
from ringbridge.core import ring as core
from ringbridge.errors import ConfigError, InvalidBatchError, SampleError
from ringbridge.kernel import native
from ringbridge.kernel.drainer import NativeDrainer
from ringbridge.schema.binary import validate_binary_batch
from ringbridge.schema.jsonkeys import check_duplicate_keys, id_member

warned = []
class Collect(logging.Handler):
    def emit(self, record):
        warned.append(getattr(record, "function", record.getMessage()))
logging.getLogger("ringbridge").addHandler(Collect())
out = {}
limits = {"ring_size": 4096, "max_sample_bytes": 100}
out["count"] = validate_binary_batch(core.encode_batch([b"abc", b""]), **limits).count
validate_binary_batch(core.encode_batch([b"again"]), **limits)
try:
    validate_binary_batch(core.encode_batch([b"ab", b"c"])[:-12], **limits)
except InvalidBatchError as exc:
    out["bad"] = [exc.index, exc.reason]
try:
    check_duplicate_keys(b'{"samples": [{"a": 1}]}')
    check_duplicate_keys(b'{"samples": [{"a": 1}, {"a": 1, "a": 2}]}')
except SampleError as exc:
    out["duplicate"] = exc.message
out["id"] = id_member(b'{"id": 7, "samples": [')
o = native.ops()
cell = (ctypes.c_uint64 * 1)()
o.store_release_u64(ctypes.addressof(cell), 5)
out["ordered"], out["cell"] = o.ordered, o.load_acquire_u64(ctypes.addressof(cell))
try:
    NativeDrainer(-1, 0, 0)
except ConfigError as exc:
    out["drainer"] = exc.message
platform.machine = lambda: "aarch64"
try:
    native._Ops()
except ConfigError as exc:
    out["arm64"] = exc.message
out["warned"] = warned
print(json.dumps(out))
"""


def test_without_the_helpers_the_fallbacks_serve(tmp_path: Path) -> None:
    """What runs today when a helper is not built: the Python validator and the
    exact duplicate-key check, plain moves on x86-64; no drain worker, and no
    start on a CPU that is not TSO."""
    env = dict(os.environ)
    for lib in (ORDERING, VALIDATE, DRAINER):
        env[lib.env_var] = str(tmp_path / lib.filename)
    run = subprocess.run(
        [sys.executable, "-c", _WITHOUT_HELPERS], env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    helpers = {lib.what: str(tmp_path / lib.filename) for lib in (ORDERING, VALIDATE, DRAINER)}
    assert out["count"] == 2 and out["bad"] == [1, "truncated header"]
    # The exact check finds the key, not the sample that holds it.
    assert out["duplicate"].startswith("an object names key 'a' twice")
    assert out["id"] is None  # the scan that finds a broken frame's id is C only
    assert (out["ordered"], out["cell"]) == (False, 5)
    assert out["drainer"].startswith(
        f"drain worker library {helpers['drain worker library']} is missing; run 'make setup'"
    )
    assert out["arm64"].startswith(
        f"native ordering helper {helpers['native ordering helper']} is missing"
    )
    assert out["arm64"].endswith(
        "aarch64 is not TSO: plain stores could publish producer_pos before the record"
    )
    # One warning per fallback taken, however many calls took it.
    assert out["warned"] == [
        "rb_validate_batch",
        "rb_json_dup_keys",
        "native ordering helper unavailable: plain moves (x86-64 keeps their order)",
    ]
