"""Shared wasmtime engines: one per stack limit, each with its own epoch ticker thread.

``max_wasm_stack`` is an engine setting, so tasks with different stack limits need different
engines; everything else (fuel, deadline, memory) is per Store. Engines and compiled modules are
safe to share between threads; Stores are not (use one per task).
"""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass
from importlib.metadata import version

import wasmtime

from wgtlab import defaults

WASMTIME_VERSION = version("wasmtime")


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
            f"cm={int(self.component_model)};rsimd=det"
        )


class _Ticker:
    """Advances one engine's epoch every ``tick_ms``; a daemon thread stopped via ``stop()``."""

    def __init__(self, engine: wasmtime.Engine, tick_ms: int) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, args=(engine, tick_ms / 1000.0), name="wgt-epoch-ticker", daemon=True
        )
        self._thread.start()

    def _loop(self, engine: wasmtime.Engine, period: float) -> None:
        while not self._stop.wait(period):
            engine.increment_epoch()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=1.0)


class SandboxEngine:
    """A wasmtime Engine plus its ticker; the ticker starts on first use of ``deadline_ticks``."""

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
        self.engine = wasmtime.Engine(config)
        self.fingerprint = settings.fingerprint()
        self._ticker: _Ticker | None = None
        self._lock = threading.Lock()

    def deadline_ticks(self, timeout_ms: int) -> int:
        """Epoch ticks for a wall-clock limit; starts the ticker thread if not running."""
        if self._ticker is None:
            with self._lock:
                if self._ticker is None:
                    self._ticker = _Ticker(self.engine, self.tick_ms)
        # +1: the deadline counts from the epoch now, which may be about to tick.
        return max(1, -(-timeout_ms // self.tick_ms)) + 1

    @property
    def ticker_running(self) -> bool:
        return self._ticker is not None

    def close(self) -> None:
        with self._lock:
            if self._ticker is not None:
                self._ticker.stop()
                self._ticker = None


_engines: dict[EngineSettings, SandboxEngine] = {}
_engines_lock = threading.Lock()


def get_engine(max_stack_bytes: int = defaults.MAX_STACK_BYTES) -> SandboxEngine:
    """The process-wide engine for this stack limit (created once, shared by all threads)."""
    settings = EngineSettings(max_stack_bytes=max_stack_bytes)
    engine = _engines.get(settings)
    if engine is None:
        with _engines_lock:
            engine = _engines.get(settings)
            if engine is None:
                engine = SandboxEngine(settings)
                _engines[settings] = engine
    return engine


def shutdown_engines() -> None:
    """Stop every ticker thread (called at exit; safe to call more than once)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.close()


atexit.register(shutdown_engines)
