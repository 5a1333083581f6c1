"""ResourceLimits: the four limits every sandboxed task runs under, plus output and log caps;
ModuleCaps: what loading (parsing and compiling) one module may cost the host."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field, replace

from wgtlab import defaults

# Beyond these a value is a typo, not a plan: wasm32 memory tops out at 4 GiB, and a day of
# wall clock or a stack larger than 512 MiB is never what an analyst meant.
_CEILINGS = {
    "max_memory_bytes": 4 << 30,
    "max_cpu_cycles": 1 << 62,
    "max_execution_time_ms": 24 * 3600 * 1000,
    "max_stack_bytes": 512 << 20,
    "max_output_bytes": 4 << 30,
    "max_log_bytes": 64 << 20,
}

# Below this a stack limit is a typo too: the host-to-wasm entry needs stack before the first
# instruction runs (at 10 bytes every call overflows at once), and 64 KiB leaves a real
# kernel's call chain room to work.
MIN_STACK_BYTES = 64 << 10


def _whole_number(name: str, value: object, owner: str = "ResourceLimits") -> int:
    """``value`` as an int: ints as given, integral floats (``1e9``) converted; else ValueError."""
    if type(value) is int:
        return value
    if not isinstance(value, bool):
        if isinstance(value, numbers.Integral):  # numpy integers
            return int(value)
        if isinstance(value, numbers.Real):
            as_float = float(value)
            if math.isfinite(as_float) and as_float.is_integer():
                return int(as_float)
    raise ValueError(
        f"{owner}.{name} must be a whole number (an int, or a float with no fractional "
        f"part such as 1e9), got {type(value).__name__} {value!r}"
    )


@dataclass(frozen=True)
class ResourceLimits:
    """Limits for one task: memory, CPU fuel, wall clock, wasm stack, output and log sizes.

    Defaults are the seed system's: 256 MiB, 1e9 fuel, 30 s, 1 MiB of stack (at least 64 KiB).
    Every field is a whole number: an int, or a float with no fractional part (``1e9`` is stored
    as the int 1_000_000_000); 1.5, nan, inf and bools are refused.
    """

    max_memory_bytes: int = defaults.MAX_MEMORY_BYTES
    max_cpu_cycles: int = defaults.MAX_CPU_CYCLES
    max_execution_time_ms: int = defaults.MAX_EXECUTION_TIME_MS
    max_stack_bytes: int = defaults.MAX_STACK_BYTES
    max_output_bytes: int = defaults.MAX_OUTPUT_BYTES
    max_log_bytes: int = field(default=defaults.MAX_LOG_BYTES)

    def __post_init__(self) -> None:
        for name, ceiling in _CEILINGS.items():
            value = _whole_number(name, getattr(self, name))
            object.__setattr__(self, name, value)
            if value <= 0:
                raise ValueError(f"ResourceLimits.{name} must be positive, got {value}")
            if name == "max_stack_bytes" and value < MIN_STACK_BYTES:
                raise ValueError(
                    f"ResourceLimits.max_stack_bytes must be at least {MIN_STACK_BYTES:,} "
                    f"(64 KiB), got {value:,}; a smaller stack overflows in the first calls of "
                    "real code"
                )
            if value > ceiling:
                raise ValueError(
                    f"ResourceLimits.{name}={value} is absurdly large (ceiling {ceiling}); "
                    "pass a realistic limit"
                )

    def replace(self, **changes: int) -> ResourceLimits:
        """A copy with some limits changed (validated like the constructor)."""
        unknown = set(changes) - set(_CEILINGS)
        if unknown:
            raise ValueError(
                f"unknown ResourceLimits field(s) {sorted(unknown)}; known: {sorted(_CEILINGS)}"
            )
        return replace(self, **changes)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class ModuleCaps:
    """Caps on what loading one module may cost the host, checked before it is compiled.

    Cranelift's compile time and memory grow with a module's functions and code (not always
    linearly) and a compile cannot be stopped, so a module past any cap is refused with an
    InvalidModule naming the cap; a trusted bigger module loads with
    ``WasmModule(wasm, caps=ModuleCaps(max_functions=...))``. Modules with more than a few KiB
    of code compile in a child process limited to ``max_compile_seconds`` and
    ``max_compile_memory_bytes``. Counts include imported items.
    """

    max_module_bytes: int = defaults.MAX_MODULE_BYTES
    max_code_bytes: int = defaults.MAX_CODE_BYTES
    max_function_bytes: int = defaults.MAX_FUNCTION_BYTES
    max_functions: int = defaults.MAX_FUNCTIONS
    max_types: int = defaults.MAX_TYPES
    max_imports: int = defaults.MAX_IMPORTS
    max_exports: int = defaults.MAX_EXPORTS
    max_globals: int = defaults.MAX_GLOBALS
    max_tables: int = defaults.MAX_TABLES
    max_compile_seconds: float = defaults.MAX_COMPILE_SECONDS
    max_compile_memory_bytes: int = defaults.MAX_COMPILE_MEMORY_BYTES

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name == "max_compile_seconds":
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    raise ValueError(f"ModuleCaps.{name} must be a number, got {value!r}")
                seconds = float(value)
                if not (math.isfinite(seconds) and seconds > 0):
                    raise ValueError(f"ModuleCaps.{name} must be positive and finite, got {value}")
                object.__setattr__(self, name, seconds)
                continue
            value = _whole_number(name, value, "ModuleCaps")
            if value <= 0:
                raise ValueError(f"ModuleCaps.{name} must be positive, got {value}")
            object.__setattr__(self, name, value)
