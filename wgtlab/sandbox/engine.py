"""Shared wasmtime engines: one per stack limit, and a bounded number of epoch ticker threads.

``max_wasm_stack`` is an engine setting, so tasks with different stack limits need different
engines; everything else (fuel, deadline, memory) is per Store. Engines and compiled modules are
safe to share between threads; Stores are not (use one per task).

Each engine's wall-clock limit needs a thread advancing its epoch. Only the ``MAX_LIVE_ENGINES``
most recently requested engines (the default-stack engine always among them) keep that ticker
running between tasks. An engine pushed out of that set is *retired*: it still works (a Sandbox
holding it runs as before), but its ticker runs only while it is needed -- while a task holds a
``lease`` on it, or until well past any deadline handed out by ``deadline_ticks`` -- and then the
thread ends by itself. So a process that uses many stack limits keeps at most
``MAX_LIVE_ENGINES`` idle ticker threads, plus one per retired engine with a task in flight.

Engine objects themselves are never freed (about 1.5 KiB each): code caches are keyed on the
engine's fingerprint (cache.py) or on ``id(engine)`` (the Python runner), so a second engine
with the same settings, or a new engine reusing a freed one's id, would be handed code compiled
for another engine. Asking again for a retired engine's stack limit returns that same engine.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version

import wasmtime

from wgtlab import defaults

__all__ = [
    "DISABLED_FEATURES",
    "MAX_LIVE_ENGINES",
    "TICKER_THREAD_NAME",
    "WASMTIME_VERSION",
    "EngineSettings",
    "SandboxEngine",
    "get_engine",
    "live_ticker_threads",
    "shutdown_engines",
]

WASMTIME_VERSION = version("wasmtime")

# Engines whose epoch ticker keeps running between tasks (the default-stack engine included).
MAX_LIVE_ENGINES = 4
TICKER_THREAD_NAME = "wgt-epoch-ticker"


# WebAssembly proposals no kernel (nor the Python runner, checked by its tests) needs, turned off
# so a hostile module cannot use them. GC and function references: wasmtime-py 50 aborts the
# process describing their types. Multi-value: a block with parameters made Cranelift's compile
# memory quadratic (a 48 KB module of 16,000 one-parameter loops took 7 GB). The rest are
# surface no kernel needs: threads (shared memory), memory64 and several memories (ABI v1 has
# one 32-bit memory), exceptions, stack switching, tail calls, custom page sizes, wide arithmetic.
# SIMD stays on: the built-in kernels use it. Reference types stay on: wasmtime's component model
# requires them (turning them off aborts Engine creation).
DISABLED_FEATURES = (
    "wasm_multi_value",
    "wasm_gc",
    "wasm_function_references",
    "wasm_threads",
    "wasm_memory64",
    "wasm_multi_memory",
    "wasm_exceptions",
    "wasm_stack_switching",
    "wasm_tail_call",
    "wasm_custom_page_sizes",
    "wasm_wide_arithmetic",
    "gc_support",
)


@dataclass(frozen=True)
class EngineSettings:
    """What an engine is configured with; part of every compiled-code cache key."""

    max_stack_bytes: int
    fuel: bool = True
    epoch: bool = True
    nan_canonicalization: bool = True  # float results must agree across workers
    component_model: bool = True

    def fingerprint(self) -> str:
        return (
            f"wasmtime={WASMTIME_VERSION};stack={self.max_stack_bytes};fuel={int(self.fuel)};"
            f"epoch={int(self.epoch)};nan={int(self.nan_canonicalization)};"
            f"cm={int(self.component_model)};rsimd=det;off={','.join(DISABLED_FEATURES)}"
        )


class _Ticker:
    """Advances its engine's epoch every ``tick_ms`` on a daemon thread.

    Stopped by ``stop()``, or ends by itself once its engine is retired and idle.
    """

    def __init__(self, owner: SandboxEngine, tick_ms: int) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop,
            args=(owner, tick_ms / 1000.0),
            name=f"{TICKER_THREAD_NAME}-{owner.settings.max_stack_bytes}",
            daemon=True,
        )
        self._thread.start()

    def _loop(self, owner: SandboxEngine, period: float) -> None:
        while not self._stop.wait(period):
            owner.engine.increment_epoch()
            owner._epochs += 1  # only the one running ticker of an engine writes this
            if owner.retired and owner._idle() and owner._ticker_done(self):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()


class SandboxEngine:
    """A wasmtime Engine plus its epoch ticker; the ticker starts when a deadline is first used.

    Take wall-clock deadlines from ``lease(timeout_ms)`` (exact: the ticker keeps running for as
    long as the lease is held) or from ``deadline_ticks(timeout_ms)`` (no lease: a retired
    engine keeps ticking until twice the deadline has passed).
    """

    tick_ms = defaults.EPOCH_TICK_MS

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        config = wasmtime.Config()
        config.consume_fuel = settings.fuel
        config.epoch_interruption = settings.epoch
        config.cranelift_nan_canonicalization = settings.nan_canonicalization
        config.max_wasm_stack = settings.max_stack_bytes
        config.wasm_component_model = settings.component_model
        # Relaxed SIMD may round differently per CPU; replicas must agree bit for bit.
        config.wasm_relaxed_simd_deterministic = True
        for feature in DISABLED_FEATURES:
            setattr(config, feature, False)
        self.engine = wasmtime.Engine(config)
        self.fingerprint = settings.fingerprint()
        self.retired = False  # out of the live set: tick only while needed
        self._ticker: _Ticker | None = None
        self._lock = threading.Lock()
        self._epochs = 0  # epoch increments made by this engine's tickers
        self._leases = 0  # tasks running under lease()
        self._horizon = 0  # deadline_ticks() needs ticking until _epochs reaches this

    def __repr__(self) -> str:
        state = "retired" if self.retired else "live"
        return f"SandboxEngine(max_stack_bytes={self.settings.max_stack_bytes:,}, {state})"

    def _ticks(self, timeout_ms: int) -> int:
        # +1: the deadline counts from the epoch now, which may be about to tick.
        return max(1, -(-timeout_ms // self.tick_ms)) + 1

    def _ensure_ticker(self) -> None:  # with self._lock held
        if self._ticker is None:
            self._ticker = _Ticker(self, self.tick_ms)

    def deadline_ticks(self, timeout_ms: int) -> int:
        """Epoch ticks for a wall-clock limit; starts the ticker thread if not running.

        The caller sets the Store's deadline right after this returns, so the deadline falls at
        most ``ticks`` epochs after now plus however long the caller took in between; the ticker
        keeps going for ``2 * ticks + 2`` epochs, which covers any gap shorter than the limit
        itself. Prefer ``lease``, which needs no such margin.
        """
        ticks = self._ticks(timeout_ms)
        with self._lock:
            self._horizon = max(self._horizon, self._epochs + 2 * ticks + 2)
            self._ensure_ticker()
        return ticks

    @contextlib.contextmanager
    def lease(self, timeout_ms: int) -> Iterator[int]:
        """Epoch ticks for a wall-clock limit; the ticker runs at least until the block ends.

        Run the task (instantiate and every call) inside the block.
        """
        ticks = self._ticks(timeout_ms)
        with self._lock:
            self._leases += 1
            self._ensure_ticker()
        try:
            yield ticks
        finally:
            with self._lock:
                self._leases -= 1

    def _idle(self) -> bool:
        return self._leases == 0 and self._epochs >= self._horizon

    def _ticker_done(self, ticker: _Ticker) -> bool:
        """Called by a ticker of a retired engine: True (and forgotten) if it may end now."""
        with self._lock:
            if self.retired and self._idle() and self._ticker is ticker:
                self._ticker = None
                return True
        return False

    @property
    def ticker_running(self) -> bool:
        return self._ticker is not None

    def _retire(self) -> None:
        with self._lock:
            self.retired = True  # its ticker ends by itself once idle

    def _revive(self) -> None:
        with self._lock:
            self.retired = False

    def close(self) -> None:
        """Stop the ticker now (it starts again if the engine is used again)."""
        with self._lock:
            ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.stop()


_DEFAULT_SETTINGS = EngineSettings(max_stack_bytes=defaults.MAX_STACK_BYTES)
_live: OrderedDict[EngineSettings, SandboxEngine] = OrderedDict()  # least recent first
_all: dict[EngineSettings, SandboxEngine] = {}  # every engine made (never freed: see above)
_engines_lock = threading.Lock()


def get_engine(max_stack_bytes: int = defaults.MAX_STACK_BYTES) -> SandboxEngine:
    """The process-wide engine for this stack limit (created once, shared by all threads).

    Marks it most recently used; the least recently used engine beyond ``MAX_LIVE_ENGINES``
    (never the default-stack one) is retired.
    """
    settings = EngineSettings(max_stack_bytes=max_stack_bytes)
    with _engines_lock:
        engine = _live.get(settings)
        if engine is not None:
            _live.move_to_end(settings)
            return engine
        engine = _all.get(settings)
        if engine is None:
            engine = _all[settings] = SandboxEngine(settings)
        else:
            engine._revive()
        _live[settings] = engine
        while len(_live) > MAX_LIVE_ENGINES:
            oldest = next(s for s in _live if s != _DEFAULT_SETTINGS)
            _live.pop(oldest)._retire()
    return engine


def live_ticker_threads() -> list[threading.Thread]:
    """The epoch ticker threads now running (for tests and diagnostics)."""
    return [t for t in threading.enumerate() if t.name.startswith(TICKER_THREAD_NAME)]


def shutdown_engines() -> None:
    """Stop every ticker thread (called at exit; safe to call more than once)."""
    with _engines_lock:
        engines = list(_all.values())
    for engine in engines:
        engine.close()


atexit.register(shutdown_engines)
