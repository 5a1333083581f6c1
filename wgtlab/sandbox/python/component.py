"""The Python runner component: built by componentize-py, cached on disk, compiled once per process.

Two disk entries, both integrity-checked by CompiledCache: the component itself (keyed on the
componentize-py, wasmtime and Python versions and the guest sources) and its compiled form (keyed
on the engine's code settings and the component's SHA-256). A build or compile in progress in
another process is waited for through a file lock, not repeated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import cast

import wasmtime
from wasmtime import component as wc

from wgtlab import defaults
from wgtlab.errors import UdfBuildError
from wgtlab.sandbox.cache import CACHE_ENV, CompiledCache, cache_dir
from wgtlab.sandbox.engine import WASMTIME_VERSION, SandboxEngine
from wgtlab.sandbox.python.guest.guest_modules import GUEST_MODULES
from wgtlab.sandbox.wasi import component_linker

try:  # POSIX; elsewhere concurrent builds are merely duplicated, never corrupted
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "GUEST_DIR",
    "RunnerInfo",
    "build_runner",
    "component_bytes",
    "runner_component",
    "runner_digest",
    "runner_info",
]

GUEST_DIR = Path(__file__).with_name("guest")
WIT_FILE = GUEST_DIR / "runner.wit"
WORLD = "runner"
APP_MODULE = "udf_guest"
_GUEST_SOURCES = ("runner.wit", "udf_guest.py", "guest_modules.py", "udf_columns.py")
_BUILD_TIMEOUT_S = 900
# componentize-py's own command-line entry point, run with this interpreter so no PATH lookup
# (or a different environment's componentize-py) is involved.
_COMPONENTIZE_MAIN = (
    "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; "
    "sys.exit(script())"
)


@cache
def runner_digest() -> str:
    """SHA-256 (hex) naming the runner: tool versions and the guest's own sources."""
    h = hashlib.sha256(b"wgtlab-udf-runner-v1\n")
    for part in (
        f"componentize-py={version('componentize-py')}",
        f"wasmtime={WASMTIME_VERSION}",
        f"python={platform.python_version()}",
    ):
        h.update(part.encode() + b"\n")
    for name in _GUEST_SOURCES:
        data = (GUEST_DIR / name).read_bytes()
        h.update(f"{name}:{len(data)}\n".encode() + data)
    return h.hexdigest()


def _udf_dir(root: Path | str | None) -> Path:
    return Path(root) if root is not None else cache_dir() / "udf"


def _component_key() -> str:
    return f"udf-runner-component|{runner_digest()}"


def _sha_key() -> str:
    return f"udf-runner-component-sha256|{runner_digest()}"


def _code_fingerprint(engine: SandboxEngine) -> str:
    # max_wasm_stack is a run-time setting that compiled code does not depend on (checked by the
    # tests): one compile serves the engines of every stack limit.
    settings = dataclasses.replace(engine.settings, max_stack_bytes=defaults.MAX_STACK_BYTES)
    return settings.fingerprint()


def _compiled_key(engine: SandboxEngine, component_sha256: str) -> str:
    return f"udf-runner-compiled|{_code_fingerprint(engine)}|{component_sha256}"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Holds an exclusive lock on ``path`` (created if needed) across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)


class _StageProgress:
    """A time-based progress bar for a slow stage of the first @wgt.udf (tqdm.auto: a widget in
    Jupyter, a bar on stderr elsewhere), with a line saying what happens and how long it takes.
    The work itself cannot report progress; the bar fills with time against the expected
    figure (measured on the 2-core machines wgtlab is built on) and completes when it ends."""

    def __init__(self, what: str, expected_s: float) -> None:
        from tqdm.auto import tqdm

        self.expected_s = expected_s
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._bar = tqdm(
            total=round(expected_s),
            desc=what,
            unit="s",
            bar_format="{desc}: {bar} {n:.0f}/~{total} s",
            leave=True,
        )
        self._ticker = threading.Thread(target=self._tick, daemon=True, name="wgt-build-progress")
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            elapsed = time.monotonic() - self._started
            self._bar.n = min(elapsed, self.expected_s * 0.95)  # full only when it is done
            self._bar.refresh()

    def close(self, ok: bool) -> None:
        self._stop.set()
        self._ticker.join(timeout=2)
        elapsed = time.monotonic() - self._started
        if ok:  # a full bar of the time it took (reset: a notebook widget takes a new total so)
            taken = max(round(elapsed), 1)
            self._bar.reset(total=taken)
            self._bar.update(taken)
        self._bar.set_description_str(
            f"{self._bar.desc}: {'done' if ok else 'failed'} in {elapsed:.0f} s"
        )
        self._bar.close()


@contextlib.contextmanager
def _stage(what: str, expected_s: float) -> Iterator[None]:
    print(
        f"wgtlab: {what} for @wgt.udf, once per machine (about {expected_s:.0f} s, up to "
        f"{3 * expected_s:.0f} s on a busy machine); later runs load it from the cache in under "
        "a second",
        file=sys.stderr,
        flush=True,
    )
    progress = _StageProgress(what, expected_s)
    try:
        yield
    except BaseException:
        progress.close(ok=False)
        raise
    progress.close(ok=True)


def _componentize(work: Path) -> bytes:
    app = work / "app"
    app.mkdir()
    for name in _GUEST_SOURCES[1:]:
        shutil.copyfile(GUEST_DIR / name, app / name)
    out = work / "runner.wasm"
    command = [
        sys.executable,
        "-c",
        _COMPONENTIZE_MAIN,
        "-q",
        "-d",
        str(WIT_FILE),
        "-w",
        WORLD,
        "componentize",
        "--stub-wasi",  # no imports at all: no files, network, clock or entropy
        "-p",
        str(app),
        APP_MODULE,
        "-o",
        str(out),
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    try:
        proc = subprocess.run(
            command,
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=_BUILD_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise UdfBuildError(
            f"could not run componentize-py to build the Python runner: {exc}; check that "
            "componentize-py is installed (pip install 'componentize-py>=0.25,<0.26')"
        ) from None
    if proc.returncode != 0 or not out.is_file():
        tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-15:])
        raise UdfBuildError(
            f"componentize-py failed to build the Python runner (exit {proc.returncode}):\n"
            f"{tail}\nrun `wgtlab udf build` to retry; if it fails again, reinstall "
            "componentize-py"
        )
    return out.read_bytes()


def component_bytes(*, root: Path | str | None = None, force: bool = False) -> bytes:
    """The runner component's bytes: from the disk cache, else built now (7-15 s).

    A build running in another process is waited for; ``force`` rebuilds regardless.
    """
    udf_dir = _udf_dir(root)
    cache_ = CompiledCache(root=udf_dir)
    if not force:
        blob = cache_.load(_component_key())
        if blob is not None:
            return blob
    try:
        udf_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UdfBuildError(
            f"cannot build the Python runner in {str(udf_dir)!r}: {exc.strerror or exc}; set "
            f"{CACHE_ENV} to a writable directory (or unset it for the user cache directory)"
        ) from None
    with _file_lock(udf_dir / f"build-{runner_digest()[:16]}.lock"):
        if not force:
            blob = cache_.load(_component_key())  # another process built it while we waited
            if blob is not None:
                return blob
        udf_dir.mkdir(parents=True, exist_ok=True)
        with (
            tempfile.TemporaryDirectory(prefix=".build-", dir=udf_dir) as work,
            _stage("building the Python runner", defaults.RUNNER_BUILD_EXPECTED_S),
        ):
            wasm = _componentize(Path(work))
        cache_.store(_component_key(), wasm)
        cache_.store(_sha_key(), hashlib.sha256(wasm).hexdigest().encode())
        return wasm


# --- compiled, per engine ----------------------------------------------------------------------

_loaded: dict[tuple[int, str], wc.Component] = {}
_load_lock = threading.Lock()


def _load_or_compile(engine: SandboxEngine, udf_dir: Path) -> wc.Component:
    cache_ = CompiledCache(root=udf_dir)

    def deserialize(blob: bytes) -> wc.Component:
        return wc.Component.deserialize(engine.engine, blob)

    known_sha = cache_.load(_sha_key())
    if known_sha is not None:  # the fast path: no need to read the component itself
        component = cache_.load_compiled(_compiled_key(engine, known_sha.decode()), deserialize)
        if component is not None:
            return component
    wasm = component_bytes(root=udf_dir)
    sha = hashlib.sha256(wasm).hexdigest()

    def compile_component() -> wc.Component:
        try:
            return wc.Component(engine.engine, wasm)
        except wasmtime.WasmtimeError as exc:
            # A cached component that does not compile is damaged: drop it, build afresh.
            cache_.discard(_component_key())
            cache_.discard(_sha_key())
            raise UdfBuildError(
                f"the cached Python runner does not compile ({str(exc).splitlines()[0]}); it "
                "was removed: run `wgtlab udf build` (or retry) to build it again"
            ) from None

    # Under the lock, code another process compiled while we waited is loaded, not recompiled.
    def compile_with_progress() -> wc.Component:
        with _stage("compiling the Python runner", defaults.RUNNER_COMPILE_EXPECTED_S):
            return compile_component()

    with _file_lock(udf_dir / f"compile-{sha[:16]}.lock"):
        component = cache_.load_or_compile(
            _compiled_key(engine, sha),
            compile_with_progress,
            serialize=wc.Component.serialize,
            deserialize=deserialize,
        )
        if cache_.load(_sha_key()) != sha.encode():
            cache_.store(_sha_key(), sha.encode())
    return component


def runner_component(engine: SandboxEngine, *, root: Path | str | None = None) -> wc.Component:
    """The compiled runner for ``engine``; once per process (then ~0 ms), from disk in ~0.15 s."""
    udf_dir = _udf_dir(root)
    slot = (id(engine), str(udf_dir))
    component = _loaded.get(slot)
    if component is None:
        with _load_lock:  # one thread loads or compiles; the others wait for it
            component = _loaded.get(slot)
            if component is None:
                component = _load_or_compile(engine, udf_dir)
                _loaded[slot] = component
    return component


# --- build ahead of time, and describe -----------------------------------------------------------


@dataclass(frozen=True)
class RunnerInfo:
    """Where the runner is cached and what it is built from."""

    digest: str
    cache_dir: Path
    built: bool
    compiled: bool
    component_sha256: str | None
    component_bytes: int | None
    componentize_py: str
    wasmtime: str
    python: str

    def lines(self) -> list[str]:
        return [
            f"runner digest     {self.digest}",
            f"cache directory   {self.cache_dir}",
            f"component         {'built' if self.built else 'not built'}"
            + (f", {self.component_bytes:,} bytes" if self.component_bytes else ""),
            f"component sha256  {self.component_sha256 or '-'}",
            f"compiled          {'yes' if self.compiled else 'no'}",
            f"componentize-py   {self.componentize_py}",
            f"wasmtime          {self.wasmtime}",
            f"host python       {self.python}",
            f"guest modules     {', '.join(GUEST_MODULES)}",
        ]


def runner_info(*, root: Path | str | None = None) -> RunnerInfo:
    """The runner's cache state, without building or compiling anything."""
    from wgtlab.sandbox.engine import get_engine

    udf_dir = _udf_dir(root)
    cache_ = CompiledCache(root=udf_dir)
    wasm_path = cache_.path_for(_component_key())
    built = wasm_path.is_file()
    raw_sha = cache_.load(_sha_key())
    sha = raw_sha.decode() if raw_sha else None
    compiled = sha is not None and cache_.path_for(_compiled_key(get_engine(), sha)).is_file()
    return RunnerInfo(
        digest=runner_digest(),
        cache_dir=udf_dir,
        built=built,
        compiled=compiled,
        component_sha256=sha,
        component_bytes=wasm_path.stat().st_size if built else None,
        componentize_py=version("componentize-py"),
        wasmtime=WASMTIME_VERSION,
        python=platform.python_version(),
    )


def build_runner(*, root: Path | str | None = None, force: bool = False) -> dict[str, float]:
    """Build (or find) the runner, compile it for the default engine and check it works.

    Returns the seconds each step took: ``build``, ``compile``, ``check``.
    """
    from wgtlab.sandbox.engine import get_engine

    udf_dir = _udf_dir(root)
    timings: dict[str, float] = {}
    started = time.perf_counter()
    if force:
        CompiledCache(root=udf_dir).discard(_sha_key())
    component_bytes(root=udf_dir, force=force)
    timings["build"] = time.perf_counter() - started
    engine = get_engine()
    if force:
        with _load_lock:
            _loaded.pop((id(engine), str(udf_dir)), None)
    started = time.perf_counter()
    component = runner_component(engine, root=udf_dir)
    timings["compile"] = time.perf_counter() - started
    started = time.perf_counter()
    missing = sorted(set(GUEST_MODULES) - set(guest_modules(engine, component)))
    if missing:
        raise UdfBuildError(
            f"the Python runner was built without modules it must provide: {missing}; "
            "rebuild it with `wgtlab udf build --force`"
        )
    timings["check"] = time.perf_counter() - started
    return timings


def guest_modules(engine: SandboxEngine, component: wc.Component) -> list[str]:
    """The module names importable inside the guest (asks a fresh instance)."""
    store = wasmtime.Store(engine.engine)
    try:
        store.set_fuel(1 << 40)
        store.set_epoch_deadline(engine.deadline_ticks(60_000))
        instance = component_linker(engine).instantiate(store, component)
        modules = cast(wc.Func, instance.get_func(store, "modules"))
        return list(modules(store))
    finally:
        store.close()
