"""``@wgt.udf``: a plain Python function as a kernel that runs inside the WebAssembly sandbox.

The trusted side captures the function (source, globals, imports: checked at decoration), encodes
chunks and combines results; workers run it in a fresh CPython-in-WebAssembly instance per chunk.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import html
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from wgtlab import defaults
from wgtlab.errors import (
    AbiError,
    ConfigError,
    JobDefinitionError,
    MemoryLimitExceeded,
    OutOfFuel,
)
from wgtlab.sandbox.kernels.base import ExecutionSpec, Kernel
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.sandbox.python.capture import CapturedFunction, GuestProgram, capture
from wgtlab.sandbox.python.chunks import ROW_LAYOUTS, chunk_payload
from wgtlab.sandbox.python.component import runner_digest
from wgtlab.sandbox.python.guest.udf_columns import MAGIC as COLUMNS_MAGIC
from wgtlab.sandbox.python.task import run_in_guest
from wgtlab.sandbox.runner import Sandbox, TaskResult
from wgtlab.views.messages import did_you_mean, listing

__all__ = ["COMBINES", "INPUTS", "PythonUdf", "natural_combine", "udf"]

# input kind -> (what the guest receives, the default output)
INPUTS = {"records": ("json", "json"), "text": ("text", "json"), "bytes": ("bytes", "bytes")}
OUTPUTS = ("json", "bytes")
COMBINES = ("natural", "sum", "concat", "list", "min", "max", "frame")


# --- combining partial results (trusted side) ----------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class _NotNatural(Exception):
    pass


def _merge(partials: list[Any]) -> Any:
    first = partials[0]
    if all(_is_number(p) for p in partials):
        return sum(partials)  # in chunk order, so every run adds floats identically
    if all(isinstance(p, list) for p in partials):
        return [item for p in partials for item in p]
    if all(isinstance(p, (bytes, bytearray)) for p in partials):
        return b"".join(partials)
    if all(isinstance(p, str) for p in partials):
        return "".join(partials)
    if all(isinstance(p, dict) for p in partials):
        keys: dict[Any, list[Any]] = {}
        for p in partials:
            for key, value in p.items():
                keys.setdefault(key, []).append(value)
        return {key: _merge(values) for key, values in keys.items()}
    raise _NotNatural(type(first).__name__)


def natural_combine(partials: list[Any]) -> Any:
    """Numbers add, lists / strings / bytes concatenate, dicts merge key-wise by the same rules;
    anything else (or a mix) comes back as the list of partial results, in chunk order."""
    if not partials:
        return None
    try:
        return _merge(list(partials))
    except _NotNatural:
        return list(partials)


def _add(partials: list[Any]) -> Any:
    """combine="sum": numbers add; dicts key-wise; equal-length lists (histograms) element-wise."""
    if all(_is_number(p) for p in partials):
        return sum(partials)
    if all(isinstance(p, dict) for p in partials):
        keys: dict[Any, list[Any]] = {}
        for p in partials:
            for key, value in p.items():
                keys.setdefault(key, []).append(value)
        return {key: _add(values) for key, values in keys.items()}
    if all(isinstance(p, list) for p in partials) and len({len(p) for p in partials}) == 1:
        return [_add(list(column)) for column in zip(*partials, strict=True)]
    kinds = sorted({type(p).__name__ for p in partials})
    raise ConfigError(
        f"combine='sum' adds numbers, dicts of numbers or equal-length lists of numbers, got "
        f"{', '.join(kinds)}; use combine='natural', 'list' or a function"
    )


def _concat(partials: list[Any]) -> Any:
    for kind, joined in ((list, None), (str, ""), (bytes, b"")):
        if all(isinstance(p, kind) for p in partials):
            return [x for p in partials for x in p] if joined is None else joined.join(partials)
    kinds = sorted({type(p).__name__ for p in partials})
    raise ConfigError(
        f"combine='concat' joins lists, strings or bytes, got {', '.join(kinds)}; use "
        "combine='natural', 'list' or a function"
    )


def _frame(partials: list[Any]) -> Any:
    """combine="frame": one pandas DataFrame from every chunk's rows, in chunk order.

    A chunk's value is a list of row dicts, a dict of column lists, or one row (a dict of
    scalars)."""
    import pandas as pd

    frames = []
    for i, part in enumerate(partials):
        if isinstance(part, list) and all(isinstance(row, dict) for row in part):
            frames.append(pd.DataFrame.from_records(part))
        elif isinstance(part, dict) and all(isinstance(v, list) for v in part.values()):
            try:
                frames.append(pd.DataFrame(part))
            except ValueError as exc:
                raise ConfigError(f"combine='frame': chunk {i}'s columns: {exc}") from None
        elif isinstance(part, dict):
            frames.append(pd.DataFrame([part]))
        else:
            raise ConfigError(
                f"combine='frame' makes a DataFrame of rows, but chunk {i} returned a "
                f"{type(part).__name__}; return a list of row dicts, a dict of column lists or "
                "one row dict"
            )
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)


def _strict(rule: str, partials: list[Any]) -> Any:
    if rule == "list":
        return list(partials)
    if rule == "frame":
        return _frame(list(partials))
    if not partials:
        return None
    if rule in ("min", "max"):
        return (min if rule == "min" else max)(partials)
    return _add(list(partials)) if rule == "sum" else _concat(list(partials))


# --- the kernel ---------------------------------------------------------------------------------


def _seed(user_seed: int, digest: str, payload: bytes) -> int:
    """Per-task seed for the guest's random: the same chunk gets the same numbers everywhere."""
    h = hashlib.sha256(f"wgt-udf-seed|{user_seed}|{digest}|".encode())
    h.update(payload)
    return int.from_bytes(h.digest()[:8], "big")


class PythonUdf(Kernel, CapturedFunction):
    """A Python function that runs inside the WebAssembly sandbox; a kernel for ``job.kernel``.

    ``f.run(chunk)`` runs it sandboxed on one chunk and returns the value; ``f(...)`` calls the
    original function natively (unsandboxed, for debugging). Build with ``wgt.udf``.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        input: str = "records",
        rows: str = "records",
        output: str | None = None,
        combine: str | Callable[[list[Any]], Any] | None = None,
        seed: int = 0,
    ) -> None:
        self._configure(capture(fn), input, rows, output, combine, seed)
        self.fn: Callable[..., Any] | None = fn
        self.__name__ = self.name
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__wrapped__ = fn

    def _configure(
        self,
        program: GuestProgram,
        input: str,
        rows: str,
        output: str | None,
        combine: str | Callable[[list[Any]], Any] | None,
        seed: int,
        digest: str | None = None,
    ) -> None:
        if input not in INPUTS:
            raise ConfigError(f"udf input={input!r} is not one of {sorted(INPUTS)}")
        if rows not in ROW_LAYOUTS:
            raise ConfigError(f"udf rows={rows!r} is not one of {list(ROW_LAYOUTS)}")
        guest_input, default_output = INPUTS[input]
        output = output or default_output
        if output not in OUTPUTS:
            raise ConfigError(f"udf output={output!r} is not one of {list(OUTPUTS)}")
        if combine is None:  # never add per-chunk values up unasked: a mean of means is wrong
            combine = "concat" if output == "bytes" else "list"
        if not (callable(combine) or combine in COMBINES):
            raise ConfigError(f"udf combine={combine!r} is not a function or one of {COMBINES}")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 63:
            raise ConfigError(f"udf seed must be an int in [0, 2**63), got {seed!r}")
        self.program = program
        self.name = program.name
        self.input_kind = input
        self.rows = rows
        self.output_kind = output
        self.seed = seed
        self._combine = combine
        self._guest_input = guest_input
        combine_label = combine if isinstance(combine, str) else getattr(combine, "__name__", "fn")
        self._params: dict[str, Any] = {
            "input": input,
            "rows": rows,
            "output": output,
            "combine": combine_label,
            "seed": seed,
        }
        self._digest = digest if digest is not None else self._code_digest()

    def _code_digest(self) -> str:
        options = json.dumps(
            {**self._params, "entry": self.program.entry}, sort_keys=True, separators=(",", ":")
        )
        h = hashlib.sha256(b"wgt-udf-v1\n")
        for part in (runner_digest(), self.program.source, options):
            data = part.encode()
            h.update(len(data).to_bytes(8, "big") + data)
        return h.hexdigest()

    @property
    def digest(self) -> str:
        return self._digest

    @property
    def native_function(self) -> Callable[..., Any] | None:
        return self.fn

    @property
    def params(self) -> Mapping[str, Any]:
        return MappingProxyType(self._params)

    def auto_chunk_rows(
        self, head: Callable[[int], Any], limits: ResourceLimits
    ) -> tuple[int, str]:
        """Rows per chunk so each uses about ``AUTO_CHUNK_FUEL_SHARE`` of ``max_cpu_cycles``,
        from a sandboxed trial on the first rows (smaller trials if even those run out of
        fuel). A trial that fails otherwise raises its error now, before any job runs."""
        if self.input_kind != "records":
            raise ConfigError(f'chunk_rows="auto" sizes row chunks; udf {self.name} takes bytes')
        budget = limits.max_cpu_cycles * defaults.AUTO_CHUNK_FUEL_SHARE
        rows = defaults.AUTO_CHUNK_TRIAL_ROWS
        while True:
            trial = head(rows)
            n = len(trial)
            if n == 0:
                return 1, "chunk_rows=1 (auto: the input has no rows)"
            try:
                fuel = self.execute(Sandbox(limits), self.encode(trial)).fuel_used
            except OutOfFuel:
                if n == 1:
                    raise JobDefinitionError(
                        f"udf {self.name} runs out of fuel on a single row (max_cpu_cycles="
                        f"{limits.max_cpu_cycles:,}): raise max_cpu_cycles"
                    ) from None
                rows = max(1, n // 10)
                continue
            per_row = fuel / n
            cap = defaults.AUTO_CHUNK_MAX_ROWS
            chosen = int(min(cap, max(1, budget // max(per_row, 1.0))))
            capped = f", capped at {cap:,} rows" if chosen == cap else ""
            why = (
                f"chunk_rows={chosen:,} (auto: a {n:,}-row trial used {fuel:,} fuel, "
                f"{per_row:,.0f} per row; each chunk aims at "
                f"{defaults.AUTO_CHUNK_FUEL_SHARE:.0%} of max_cpu_cycles="
                f"{limits.max_cpu_cycles:,}{capped})"
            )
            return chosen, why

    def columns_read(self) -> set[str]:
        """The column names the function reads with a literal subscript from its input or
        from the rows it iterates over (``row["dest"]``, ``cols["dest"]``)."""
        return _columns_read(self.program.source, self.program.entry)

    def check_columns(self, columns: Sequence[str]) -> None:
        if self.input_kind != "records":
            return
        known = [str(c) for c in columns]
        for name in sorted(self.columns_read() - set(known)):
            hint = did_you_mean(name, known)
            raise JobDefinitionError(
                f"udf {self.name} reads column {name!r}, which the input does not have; "
                f"{hint + ' ' if hint else ''}(the input's columns: {listing(known)}); nothing "
                "was run"
            )

    def execution_spec(self) -> ExecutionSpec:
        """The program and its options as canonical JSON: a worker rebuilds the executing part
        from it (``from_execution_spec``) without unpickling anything; the combine function,
        trusted-side only, is never shipped."""
        code = {
            "program": dataclasses.asdict(self.program),
            "params": self._params,
            "digest": self._digest,
        }
        return ExecutionSpec.of(
            "udf", json.dumps(code, sort_keys=True, separators=(",", ":")).encode(), self.name
        )

    @classmethod
    def from_execution_spec(cls, spec: ExecutionSpec) -> PythonUdf:
        """Worker side: the UDF's executing part from ``execution_spec()`` bytes (untrusted:
        every field is checked; anything malformed is a ConfigError)."""
        try:
            state = json.loads(spec.code)
            program = GuestProgram(**state["program"])
            params = state["params"]
            digest = state["digest"]
            fields = (program.source, program.entry, program.name, digest)
            if not all(isinstance(f, str) for f in fields):
                raise TypeError("program fields and digest must be strings")
            kernel = cls.__new__(cls)
            kernel._configure(
                program,
                params["input"],
                params["rows"],
                params["output"],
                "list",  # combining happens on the trusted side, never on a worker
                params["seed"],
                digest=digest,
            )
            kernel._params["combine"] = str(params["combine"])  # the client's, for display
        except (ValueError, TypeError, KeyError) as exc:
            raise ConfigError(f"malformed udf code: {type(exc).__name__}: {exc}") from None
        kernel.fn = None
        return kernel

    # --- the kernel protocol ---------------------------------------------------------------------

    def encode(self, chunk: Any) -> bytes:
        """Trusted side: the task payload for ``chunk`` (typed columns for DataFrames, Series and
        numeric arrays, JSON text for other values, or the bytes themselves)."""
        try:
            if self.input_kind == "records":
                return chunk_payload(chunk, self.rows)
            if isinstance(chunk, str):
                return chunk.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ConfigError(
                f"udf {self.name}'s chunk holds text that is not valid Unicode ({exc.reason}: "
                f"{exc.object[exc.start : exc.end]!r}, e.g. a lone surrogate from a bad "
                "decode); clean it first, e.g. with s.encode('utf-8', 'replace').decode()"
            ) from None
        if isinstance(chunk, (bytes, bytearray, memoryview)):
            return bytes(chunk)
        raise ConfigError(
            f"udf {self.name} takes {self.input_kind} chunks, got {type(chunk).__name__}; give "
            "bytes (or str), or decorate with @wgt.udf (records) for tables and lists"
        )

    def execute(self, sandbox: Sandbox, payload: bytes) -> TaskResult:
        """Worker side: run on one payload in a fresh instance under ``sandbox.limits``."""
        limits = sandbox.limits
        if len(payload) > limits.max_memory_bytes:
            raise MemoryLimitExceeded(
                f"the chunk alone is {len(payload):,} bytes, over max_memory_bytes="
                f"{limits.max_memory_bytes:,}; give it smaller chunks"
            )
        guest_input = self._guest_input
        if guest_input == "json" and payload.startswith(COLUMNS_MAGIC):
            guest_input = "columns"
        if guest_input in ("bytes", "columns"):
            chunk = payload.decode("latin-1")  # one character per byte, undone in the guest
        else:
            chunk = payload.decode("utf-8", "replace" if self._guest_input == "text" else "strict")
        outcome = run_in_guest(
            limits,
            source=self.program.source,
            name=self.program.entry,
            seed=_seed(self.seed, self.digest, payload),
            input_kind=guest_input,
            output_kind=self.output_kind,
            chunk=chunk,
        )
        output = outcome.value.encode("latin-1" if self.output_kind == "bytes" else "utf-8")
        if len(output) > limits.max_output_bytes:
            raise AbiError(
                f"{self.name} returned {len(output):,} bytes, over max_output_bytes="
                f"{limits.max_output_bytes:,}; return less per chunk or raise max_output_bytes"
            )
        return TaskResult(
            output=output,
            output_sha256=hashlib.sha256(output).hexdigest(),
            fuel_used=outcome.fuel_used,
            wall_ms=outcome.wall_ms,
            memory_bytes=0,  # a component's memory is not visible to wasmtime-py's host API
            module_digest=self.digest,
            stdout=outcome.stdout,
            stderr=outcome.stderr,
            logs_truncated=outcome.logs_truncated,
        )

    def decode(self, output: bytes) -> Any:
        """Trusted side: the function's value from a task's output, which an untrusted worker
        may have shaped to hurt the decoder: at most ``MAX_DECODED_JSON_VALUES`` values, nested
        no deeper than the parser's recursion limit, else an AbiError."""
        if self.output_kind == "bytes":
            return bytes(output)
        return decode_json_output(output, self.name)

    def combine(self, partials: list[Any]) -> Any:
        """Trusted side: one value from the chunks' values (in chunk order)."""
        rule = self._combine
        if callable(rule):
            return rule(list(partials))
        if rule == "natural":
            return natural_combine(partials)
        return _strict(rule, partials)

    def empty(self) -> Any:
        """The combined value of no chunks at all."""
        rule = self._combine
        if callable(rule):
            return rule([])
        if rule == "sum":
            return 0
        if rule in ("concat", "natural") and self.output_kind == "bytes":
            return b""
        if rule in ("concat", "list"):
            return []
        if rule == "frame":
            return _frame([])
        return None

    # --- quick tries ---------------------------------------------------------------------------

    def run(self, chunk: Any, *, limits: ResourceLimits | None = None, echo: bool = True) -> Any:
        """Run sandboxed on one chunk and return the value (what it printed is echoed)."""
        result = self.run_task(chunk, limits=limits, echo=echo)
        return self.decode(result.output)

    def run_task(
        self, chunk: Any, *, limits: ResourceLimits | None = None, echo: bool = False
    ) -> TaskResult:
        """Like ``run``, but returns the TaskResult (output bytes, digest, fuel, time, logs)."""
        try:
            result = self.execute(Sandbox(limits), self.encode(chunk))
        except Exception as exc:
            if echo:
                _echo(getattr(exc, "stdout", b""), getattr(exc, "stderr", b""))
            raise
        if echo:
            _echo(result.stdout, result.stderr)
        return result

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The original function, run natively (unsandboxed): for comparing and debugging."""
        if self.fn is None:
            raise TypeError(
                f"udf {self.name} was received from another process without its native function; "
                f"use .run(chunk) to run it sandboxed"
            )
        return self.fn(*args, **kwargs)

    # --- plumbing ------------------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        # Workers need the program, not the native function (whose globals may hold a whole
        # DataFrame, or not pickle at all).
        state = dict(self.__dict__)
        state["fn"] = None
        state["__wrapped__"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        combine = self.params["combine"]
        return (
            f"<wgt.udf {self.name}: {self.input_kind} -> {self.output_kind}, combine={combine}, "
            f"digest {self.digest[:12]}>"
        )

    def _repr_html_(self) -> str:
        source = html.escape(self.program.source)
        return (
            f"<div><b>wgt.udf</b> <code>{html.escape(self.name)}</code> "
            f"({self.input_kind} &rarr; {self.output_kind}, combine="
            f"{html.escape(str(self.params['combine']))}, digest "
            f"<code>{self.digest[:16]}&hellip;</code>)<pre>{source}</pre></div>"
        )


def _columns_read(source: str, entry: str) -> set[str]:
    """String subscripts of ``entry``'s first parameter, or of names that iterate over it."""
    tree = ast.parse(source)
    function = next(
        (
            node
            for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry
        ),
        None,
    )
    if function is None or not function.args.args:
        return set()
    rows = {function.args.args[0].arg}  # the input, and names bound to its rows
    loops = [n for n in ast.walk(function) if isinstance(n, (ast.For, ast.comprehension))]
    grown = True
    while grown:
        grown = False
        for loop in loops:
            target, over = loop.target, loop.iter
            if (
                isinstance(over, ast.Name)
                and over.id in rows
                and isinstance(target, ast.Name)
                and target.id not in rows
            ):
                rows.add(target.id)
                grown = True
    return {
        node.slice.value
        for node in ast.walk(function)
        if isinstance(node, ast.Subscript)
        and isinstance(node.value, ast.Name)
        and node.value.id in rows
        and isinstance(node.slice, ast.Constant)
        and isinstance(node.slice.value, str)
    }


def decode_json_output(output: bytes, name: str) -> Any:
    """JSON ``output``, its size bounded before it is parsed and its nesting while it is (the
    parser's recursion limit: deeper is a RecursionError, caught here)."""
    values = output.count(b",") + output.count(b":") + 1  # every value but one follows one
    if values > defaults.MAX_DECODED_JSON_VALUES:
        raise AbiError(
            f"{name} returned about {values:,} JSON values, over the trusted side's limit of "
            f"{defaults.MAX_DECODED_JSON_VALUES:,}; return fewer values per chunk"
        )
    try:
        return json.loads(output)
    except RecursionError:
        raise AbiError(f"{name} returned JSON nested too deep to decode") from None
    except ValueError as exc:
        raise AbiError(f"{name} returned malformed JSON: {exc}") from None


def _echo(stdout: bytes, stderr: bytes) -> None:
    if stdout:
        sys.stdout.write(stdout.decode("utf-8", "replace"))
    if stderr:
        sys.stderr.write(stderr.decode("utf-8", "replace"))


def udf(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    input: str = "records",
    rows: str = "records",
    output: str | None = None,
    combine: str | Callable[[list[Any]], Any] | None = None,
    seed: int = 0,
) -> Any:
    """Run a Python function inside the WebAssembly sandbox: ``@wgt.udf``, ``@wgt.udf(...)``
    or ``wgt.udf(fn, ...)``.

    input:   "records" (default: JSON values; a DataFrame chunk is a list of row dicts),
             "text" (str) or "bytes" (bytes in, bytes out by default).
    rows:    "records" (list of dicts) or "columns" (dict of column lists) for DataFrames.
    output:  "json" (default, any JSON-compatible value) or "bytes".
    combine: how the chunks' values become the job's value (trusted side). Default: "list",
             the per-chunk values in chunk order ("concat" for bytes output): per-chunk
             statistics are never added up unasked. Or "sum" (numbers add; dicts key-wise;
             equal-length lists element-wise), "natural" (numbers add, lists concatenate, dicts
             merge key-wise, else a list), "concat", "min", "max", "frame" (a pandas DataFrame
             of every chunk's rows: lists of row dicts, dicts of column lists or single row
             dicts), or a function of the list of results.
    seed:    mixed with each chunk's content into the seed of the guest's ``random``.

    Problems with the function (no source, a global or import the sandbox lacks) raise
    UdfBuildError here, before any chunk runs.
    """
    if fn is None:
        return lambda f: udf(f, input=input, rows=rows, output=output, combine=combine, seed=seed)
    if isinstance(fn, PythonUdf):
        if fn.fn is None:
            raise ConfigError(f"udf {fn.name} has no native function here to re-wrap")
        fn = fn.fn
    return PythonUdf(fn, input=input, rows=rows, output=output, combine=combine, seed=seed)
