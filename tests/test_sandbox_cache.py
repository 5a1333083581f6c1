"""The compiled-code caches (memory and disk), and ResourceLimits validation."""

from __future__ import annotations

import os

import pytest
import sandbox_hostile as hostile

import wgtlab as wgt
from wgtlab.sandbox.cache import CompiledCache
from wgtlab.sandbox.engine import get_engine
from wgtlab.sandbox.module import WasmModule, clear_memory_cache
from wgtlab.sandbox.runner import Sandbox


def _key(module: WasmModule, stack: int = wgt.ResourceLimits().max_stack_bytes) -> str:
    return module.compiled_key(get_engine(stack))


def _entries(root):
    return sorted(p.name for p in root.glob("*.bin"))


def test_compiled_module_is_written_once_and_reused(cache_dir):
    WasmModule.from_wat(hostile.UPPER)
    files = _entries(cache_dir)
    assert len(files) == 1
    stamp = os.stat(cache_dir / files[0]).st_mtime_ns
    clear_memory_cache()
    again = WasmModule.from_wat(hostile.UPPER)  # loaded from disk, not rewritten
    assert os.stat(cache_dir / files[0]).st_mtime_ns == stamp
    assert Sandbox().run(again, b"abc").output == b"ABC"


@pytest.mark.parametrize(
    "damage",
    [
        lambda blob: blob[:-1] + bytes([blob[-1] ^ 0xFF]),  # bit rot in the code
        lambda blob: blob[: len(blob) // 2],  # truncated
        lambda blob: b"",  # empty
        lambda blob: b"\x7fELF" + blob[4:],  # not our magic
    ],
)
def test_corrupt_cache_file_is_ignored_and_rebuilt(cache_dir, damage):
    module = WasmModule.from_wat(hostile.UPPER)
    path = CompiledCache(cache_dir).path_for(_key(module))
    good = path.read_bytes()
    path.write_bytes(damage(good))
    clear_memory_cache()
    rebuilt = WasmModule.from_wat(hostile.UPPER)
    assert Sandbox().run(rebuilt, b"still works").output == b"STILL WORKS"
    assert CompiledCache(cache_dir).load(_key(module)) is not None  # rewritten, valid again


def test_foreign_cache_entries_are_never_loaded(cache_dir):
    upper = WasmModule.from_wat(hostile.UPPER)
    echo = WasmModule.from_wat(hostile.ECHO)
    store = CompiledCache(cache_dir)
    # a well-formed entry for another key, copied over this one: the key check refuses it
    store.path_for(_key(upper)).write_bytes(store.path_for(_key(echo)).read_bytes())
    # a well-formed entry whose payload is not compiled code: deserialization refuses it
    store.store(_key(echo), b"not machine code at all")
    clear_memory_cache()
    assert Sandbox().run(WasmModule.from_wat(hostile.UPPER), b"up").output == b"UP"
    assert Sandbox().run(WasmModule.from_wat(hostile.ECHO), b"up").output == b"up"
    assert store.load(_key(echo)) != b"not machine code at all"


def test_each_engine_setting_has_its_own_entry(cache_dir):
    module = WasmModule.from_wat(hostile.ECHO)
    Sandbox(wgt.ResourceLimits(max_stack_bytes=512 << 10)).run(module, b"x")
    assert len(_entries(cache_dir)) == 2
    assert _key(module) != _key(module, 512 << 10)


def test_unwritable_cache_dir_only_costs_speed(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache dir should be")
    monkeypatch.setenv("WGTLAB_CACHE_DIR", str(blocker))
    clear_memory_cache()
    assert Sandbox().run(WasmModule.from_wat(hostile.UPPER), b"ok").output == b"OK"
    clear_memory_cache()


# --- ResourceLimits -------------------------------------------------------------------------------

FIELDS = [
    "max_memory_bytes",
    "max_cpu_cycles",
    "max_execution_time_ms",
    "max_stack_bytes",
    "max_output_bytes",
    "max_log_bytes",
]


def test_defaults_are_the_seed_systems():
    limits = wgt.ResourceLimits()
    assert limits.max_memory_bytes == 256 << 20
    assert limits.max_cpu_cycles == 1_000_000_000
    assert limits.max_execution_time_ms == 30_000
    assert limits.max_stack_bytes == 1 << 20


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", [0, -1, True, 1.5, "100", 1 << 70])
def test_invalid_limits_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        wgt.ResourceLimits(**{field: value})


def test_limits_are_frozen_and_replace_validates():
    limits = wgt.ResourceLimits()
    with pytest.raises(AttributeError):
        limits.max_cpu_cycles = 5  # type: ignore[misc]
    assert limits.replace(max_cpu_cycles=5).max_cpu_cycles == 5
    with pytest.raises(ValueError, match="max_cpu_cycles"):
        limits.replace(max_cpu_cycles=0)
    with pytest.raises(ValueError, match="unknown"):
        limits.replace(max_fuel=5)
