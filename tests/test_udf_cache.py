"""The runner's disk cache: damaged entries are rebuilt; concurrent builders wait for each other.

Each test works in its own cache directory, seeded from the session's runner so that only the
step under test (one compile, or one build) really runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from udf_support import ensure_runner

import wgtlab as wgt
from wgtlab.cli import main
from wgtlab.sandbox.cache import CompiledCache
from wgtlab.sandbox.engine import get_engine
from wgtlab.sandbox.python import component as runner
from wgtlab.sandbox.python.task import run_in_guest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def built():
    return ensure_runner()


def seed_cache(root: Path, *, compiled: bool) -> bytes:
    """Copy the session's component (and optionally its compiled form) into ``root``."""
    wasm = runner.component_bytes()
    cache = CompiledCache(root=root)
    cache.store(runner._component_key(), wasm)
    sha = runner.hashlib.sha256(wasm).hexdigest()
    cache.store(runner._sha_key(), sha.encode())
    if compiled:
        key = runner._compiled_key(get_engine(), sha)
        cache.store(key, CompiledCache(root=runner._udf_dir(None)).load(key))
    return wasm


def answer(root: Path) -> str:
    source = "def f(rows):\n    return sum(rows)\n"
    return run_in_guest(
        wgt.ResourceLimits(),
        source=source,
        name="f",
        seed=0,
        input_kind="json",
        output_kind="json",
        chunk="[1, 2, 39]",
        root=root,
    ).value


def test_compiled_code_that_does_not_load_is_discarded_and_recompiled(tmp_path, capfd):
    wasm = seed_cache(tmp_path, compiled=False)
    sha = runner.hashlib.sha256(wasm).hexdigest()
    key = runner._compiled_key(get_engine(), sha)
    cache = CompiledCache(root=tmp_path)
    # Intact as a cache file (its checksum matches) but not wasmtime code: must not be trusted.
    cache.store(key, b"\x00not compiled code" * 1000)
    capfd.readouterr()
    assert answer(tmp_path) == "42"
    # the slow compile says what it is doing, how long it takes, and when it is done
    progress = capfd.readouterr().err.replace("\r", "\n")
    assert progress.startswith(
        "wgtlab: compiling the Python runner for @wgt.udf, once per machine (about 10 s, up "
        "to 30 s on a busy machine); later runs load it from the cache in under a second\n"
    )
    assert "compiling the Python runner: done in " in progress
    recompiled = cache.load(key)
    assert recompiled is not None and recompiled.startswith(b"\x7fELF")
    # a flipped byte fails the cache's checksum: the next process recompiles too
    path = cache.path_for(key)
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    path.write_bytes(bytes(blob))
    assert cache.load(key) is None


def test_one_compile_serves_every_stack_limit(tmp_path):
    seed_cache(tmp_path, compiled=True)
    runner.runner_component(get_engine(), root=tmp_path)
    small = runner.runner_component(get_engine(128 << 10), root=tmp_path)
    compiled = [p for p in tmp_path.glob("*.bin") if p.stat().st_size > 30 << 20]
    assert len(compiled) == 1  # deserialized for the second engine, not compiled again
    assert small is not runner.runner_component(get_engine(), root=tmp_path)  # one per engine


BUILDER = """
import hashlib, json, sys, time
from wgtlab.sandbox.python import component
builds = []
real = component._componentize
def counted(work):
    builds.append(time.time())
    return real(work)
component._componentize = counted
wasm = component.component_bytes(root=sys.argv[1])
print(json.dumps({"builds": len(builds), "sha": hashlib.sha256(wasm).hexdigest()}))
"""


def test_a_damaged_component_is_rebuilt_once_while_others_wait(tmp_path):
    wasm = seed_cache(tmp_path, compiled=False)
    path = CompiledCache(root=tmp_path).path_for(runner._component_key())
    damaged = bytearray(path.read_bytes())
    damaged[-1000] ^= 0x01
    path.write_bytes(bytes(damaged))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", BUILDER, str(tmp_path)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    reports, errors = [], []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        reports.append(json.loads(out))
        errors.append(err)
    assert sorted(r["builds"] for r in reports) == [0, 1]
    # the process that built said so on stderr, with a progress bar; the one that waited didn't
    builder = next(e for r, e in zip(reports, errors, strict=True) if r["builds"] == 1)
    waiter = next(e for r, e in zip(reports, errors, strict=True) if r["builds"] == 0)
    assert builder.startswith("wgtlab: building the Python runner for @wgt.udf, once per machine")
    assert "building the Python runner: done in " in builder.replace("\r", "\n")
    assert "wgtlab:" not in waiter
    rebuilt = CompiledCache(root=tmp_path).load(runner._component_key())
    assert rebuilt is not None and rebuilt[:8] == wasm[:8] == b"\x00asm\x0d\x00\x01\x00"
    assert reports[0]["sha"] == reports[1]["sha"] == runner.hashlib.sha256(rebuilt).hexdigest()


def test_cli_build_and_info(capsys):
    assert main(["udf", "build"]) == 0
    out = capsys.readouterr().out
    assert f"runner digest     {runner.runner_digest()}" in out
    assert "compiled          yes" in out and "ready in" in out
    assert main(["udf", "info"]) == 0
    assert "component         built" in capsys.readouterr().out


def test_info_on_an_empty_cache_builds_nothing(tmp_path):
    info = runner.runner_info(root=tmp_path)
    assert (info.built, info.compiled, info.component_sha256) == (False, False, None)
    assert list(tmp_path.iterdir()) == []


def test_an_unusable_cache_directory_is_a_build_error_naming_the_variable(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(wgt.UdfBuildError) as caught:
        runner.component_bytes(root=blocker / "udf")
    message = str(caught.value)
    assert message.startswith(f"cannot build the Python runner in '{blocker / 'udf'}': ")
    assert "set WGTLAB_CACHE_DIR to a writable directory" in message
    assert blocker.read_text() == "not a directory"
