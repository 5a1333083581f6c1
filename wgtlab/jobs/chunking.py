"""Cutting a job's input into chunks: rows of tables and arrays, bytes, text, files, CES shards.

Chunks are produced lazily and in order, so a large file never sits in memory whole. Text is cut
at whitespace, so no word or line is split between two chunks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from wgtlab import defaults
from wgtlab.errors import ConfigError, JobDefinitionError

_WHITESPACE = b" \t\n\r\x0b\x0c"


@dataclass(frozen=True)
class InputSpec:
    """What a job reads and how to cut it. Exactly one of the chunk sizes may be set."""

    source: Any
    chunk_rows: int | Literal["auto"] | None = None  # "auto": sized by a trial (UDFs' default)
    chunk_bytes: int | None = None
    chunk_lines: int | None = None
    pipeline: Any = None  # a CESPipeline when ``source`` is a shard set or URL

    def __post_init__(self) -> None:
        sizes = {
            "chunk_rows": self.chunk_rows,
            "chunk_bytes": self.chunk_bytes,
            "chunk_lines": self.chunk_lines,
        }
        given = {k: v for k, v in sizes.items() if v is not None}
        if len(given) > 1:
            raise JobDefinitionError(f"give at most one chunk size, got {sorted(given)}")
        for name, value in given.items():
            if name == "chunk_rows" and value == "auto":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise JobDefinitionError(f"{name} must be a positive int, got {value!r}")
        kind = source_kind(self.source, self.pipeline)
        if self.chunk_rows is not None and kind not in ("table", "array", "list", "shards"):
            raise JobDefinitionError(
                f"chunk_rows applies to DataFrames, Series, arrays and lists, not {kind} input; "
                "use chunk_bytes or chunk_lines"
            )
        if self.chunk_lines is not None and kind not in ("text", "file", "bytes", "shards"):
            raise JobDefinitionError(f"chunk_lines applies to text, bytes and files, not {kind}")
        if kind == "file" and not Path(self.source).is_file():
            problem = (
                "is a directory, not a file" if Path(self.source).is_dir() else "does not exist"
            )
            raise JobDefinitionError(f"input file {os.fspath(self.source)!r} {problem}")


def source_kind(source: Any, pipeline: Any = None) -> str:
    """'table', 'array', 'list', 'bytes', 'text', 'file' or 'shards'; JobDefinitionError otherwise.

    With a CES ``pipeline``, the source is a shard set: a list of shards (None for missing ones)
    or an fsspec URL that ``wgt.ces.save`` wrote. A list of shards is recognised without one too
    (it is then opened with ``$CES_ENCRYPTION_KEY``).
    """
    if pipeline is not None or is_shard_list(source):
        if isinstance(source, (str, os.PathLike, list, tuple)):
            return "shards"
        raise JobDefinitionError(
            "with a CES pipeline the input must be a shard list or a URL, "
            f"not {type(source).__name__}"
        )
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(source, str):
        return "text"
    if isinstance(source, os.PathLike):
        return "file"
    module = type(source).__module__.split(".")[0]
    if module == "pandas" and hasattr(source, "iloc"):
        return "table"
    if module == "numpy" and hasattr(source, "shape"):
        return "array"
    if isinstance(source, (list, tuple)):
        return "list"
    raise JobDefinitionError(
        f"cannot use a {type(source).__name__} as job input; give a pandas DataFrame or Series, "
        "a numpy array, a list, bytes, str, a pathlib.Path or a CES shard list"
    )


def input_columns(spec: InputSpec) -> list[str] | None:
    """The column names of a DataFrame input, visible without reading it; else None."""
    if spec.pipeline is not None or source_kind(spec.source) != "table":
        return None
    import pandas as pd

    if not isinstance(spec.source, pd.DataFrame):
        return None
    return [str(c) for c in spec.source.columns]


def rows_head(spec: InputSpec) -> Callable[[int], Any] | None:
    """For in-memory row inputs (DataFrame, Series, array, list): the first ``n`` rows, as a
    chunk would hold them; else None."""
    if spec.pipeline is not None or source_kind(spec.source) not in ("table", "array", "list"):
        return None
    source = spec.source
    sliceable = source.iloc if hasattr(source, "iloc") else source
    return lambda n: sliceable[:n]


def is_shard_list(source: Any) -> bool:
    """Whether ``source`` is a list of CES shards (None for missing ones), by their magic."""
    from wgtlab.ces.format import MAGIC

    if not isinstance(source, (list, tuple)):
        return False
    seen = False
    for shard in source:  # stops at the first item that is not a shard: rows are never copied
        if shard is None:
            continue
        if not isinstance(shard, (bytes, bytearray, memoryview)):
            return False
        if bytes(shard[: len(MAGIC)]) != MAGIC:
            return False
        seen = True
    return seen


def default_chunk_bytes(total: int) -> int:
    """Between 64 KiB and 1 MiB (the seed system's bounds), aiming at ~16 chunks."""
    return max(defaults.CHUNK_MIN_BYTES, min(defaults.CHUNK_MAX_BYTES, total // 16 or 1))


def iter_chunks(spec: InputSpec, input_kind: str) -> Iterator[Any]:
    """Chunks in order. ``input_kind`` is the kernel's: text is cut at whitespace."""
    kind = source_kind(spec.source, spec.pipeline)
    if kind in ("table", "array", "list"):
        yield from _row_chunks(spec.source, spec.chunk_rows)
        return
    if kind == "file":
        yield from _file_chunks(Path(spec.source), spec, input_kind)
        return
    if kind == "shards" and input_kind in _ROW_KERNELS:
        yield from _row_chunks(shards_as_dataframe(spec), spec.chunk_rows)
        return
    if kind == "shards":
        if spec.chunk_rows is not None:
            raise JobDefinitionError(
                f"chunk_rows applies to DataFrame shard sets read by row kernels; a "
                f"{input_kind} kernel reads the shard set as bytes: use chunk_bytes or chunk_lines"
            )
        data: bytes | str = _decode_shards(spec.source, spec.pipeline)
    else:
        data = spec.source
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if spec.chunk_lines is not None:
        yield from _line_chunks(raw, spec.chunk_lines)
        return
    size = spec.chunk_bytes or default_chunk_bytes(len(raw))
    yield from _byte_chunks(raw, size, at_whitespace=input_kind == "text" or kind == "text")


def _row_chunks(source: Any, chunk_rows: int | Literal["auto"] | None) -> Iterator[Any]:
    n = len(source)
    if n == 0:
        return
    rows = _rows_per_chunk(source, chunk_rows)
    sliceable = source.iloc if hasattr(source, "iloc") else source
    for start in range(0, n, rows):
        yield sliceable[start : start + rows]


def _rows_per_chunk(source: Any, chunk_rows: int | Literal["auto"] | None) -> int:
    if chunk_rows is None or chunk_rows == "auto":  # "auto" is resolved when planned
        n, nbytes = len(source), _nbytes(source)
        return max(1, default_chunk_bytes(nbytes) * n // max(1, nbytes))
    return chunk_rows


def _nbytes(source: Any) -> int:
    if hasattr(source, "memory_usage"):
        usage = source.memory_usage(index=False)
        return int(usage.sum() if hasattr(usage, "sum") else usage)
    if hasattr(source, "nbytes"):
        return int(source.nbytes)
    return 8 * len(source)


def _byte_chunks(raw: bytes, size: int, *, at_whitespace: bool) -> Iterator[bytes]:
    start, n = 0, len(raw)
    while start < n:
        end = min(n, start + size)
        if at_whitespace and end < n:
            end = _whitespace_cut(raw, start, end)
        yield raw[start:end]
        start = end


def _whitespace_cut(raw: bytes, start: int, end: int) -> int:
    """The last position in (start, end] just after whitespace; ``end`` if the chunk has none."""
    for pos in range(end, start, -1):
        if raw[pos - 1] in _WHITESPACE:
            return pos
    return end


def _line_chunks(raw: bytes, lines: int) -> Iterator[bytes]:
    start, n = 0, len(raw)
    while start < n:
        end = start
        for _ in range(lines):
            nl = raw.find(b"\n", end)
            if nl < 0:
                end = n
                break
            end = nl + 1
        yield raw[start:end]
        start = end


def _file_chunks(path: Path, spec: InputSpec, input_kind: str) -> Iterator[bytes]:
    with path.open("rb") as f:
        if spec.chunk_lines is not None:
            buf: list[bytes] = []
            for line in f:
                buf.append(line)
                if len(buf) == spec.chunk_lines:
                    yield b"".join(buf)
                    buf = []
            if buf:
                yield b"".join(buf)
            return
        size = spec.chunk_bytes or default_chunk_bytes(path.stat().st_size)
        carry = b""
        while True:
            block = f.read(size - len(carry)) if size > len(carry) else b""
            data = carry + block
            if not data:
                return
            if not block:  # end of file: the rest goes out as it is
                yield data
                return
            if input_kind == "text":
                cut = _whitespace_cut(data, 0, len(data))
                yield data[:cut]
                carry = data[cut:]
            else:
                yield data
                carry = b""


_ROW_KERNELS = ("float64", "records")  # kernels that read rows: a shard set is a DataFrame


def _shard_source(source: Any, pipeline: Any) -> tuple[list[Any], Any]:
    """The shards (loaded if ``source`` is a URL) and the pipeline that opens them."""
    from wgtlab import ces
    from wgtlab.ces.keys import key_from_env

    if pipeline is None:
        if key_from_env() is None:
            raise JobDefinitionError(
                "the job's input is a CES shard set but no key was given: pass "
                f"pipeline=wgt.CESPipeline(key=...) to wgt.input, or set {defaults.CES_KEY_ENV}"
            )
        pipeline = ces.CESPipeline()
    if isinstance(source, (str, os.PathLike)):
        source = ces.load(os.fspath(source))
    return list(source), pipeline


def _decode_shards(source: Any, pipeline: Any) -> bytes:
    shards, pipeline = _shard_source(source, pipeline)
    return pipeline.reconstruct(shards)


def shards_as_dataframe(spec: InputSpec) -> Any:
    from wgtlab.ces.frames import dataframe_from_shards

    shards, pipeline = _shard_source(spec.source, spec.pipeline)
    return dataframe_from_shards(shards, pipeline)


# --- the cut, recorded and repeated --------------------------------------------------------------

#: how chunks were measured: ``split`` is a job's own split function (not repeatable elsewhere)
CUT_UNITS = ("rows", "bytes", "lines", "split")


def describe_cut(
    spec: InputSpec, input_kind: str, splitter: Callable[[Any], Any] | None = None
) -> dict[str, Any]:
    """How ``spec`` is cut into chunks for a kernel reading ``input_kind``, in plain JSON values,
    so that ``recut`` cuts the same data into the same chunks elsewhere (a verifier recomputing
    a receipt's input digests). Reads no data: sizes left to the default are resolved from
    lengths in memory, or (files, shard sets) left for ``recut`` to resolve the same way.

    Fields: ``source`` (the input's kind), ``kernel_input``, ``unit`` (one of ``CUT_UNITS``),
    ``size`` (chunk size in that unit, or None for the default), ``at_whitespace`` (byte cuts
    moved back to whitespace), ``columns`` / ``series`` (which columns a table chunk held),
    ``dataset_id`` (a CES shard set's) and ``split`` (a split function's name).
    """
    kind = source_kind(spec.source, spec.pipeline)
    cut: dict[str, Any] = {"source": kind, "kernel_input": input_kind}
    if splitter is not None:
        if kind == "bytes" and _is_default_split(splitter):
            # @wgt.Job.define's default split: the bytes in default-sized pieces, cut anywhere
            return {**cut, "unit": "bytes", "size": None, "at_whitespace": False}
        name = f"{getattr(splitter, '__module__', '?')}.{getattr(splitter, '__qualname__', '?')}"
        return {**cut, "unit": "split", "size": None, "split": name}
    if kind in ("table", "array", "list"):
        cut.update(unit="rows", size=_rows_per_chunk(spec.source, spec.chunk_rows))
        if kind == "table" and hasattr(spec.source, "columns"):
            cut["columns"] = [str(c) for c in spec.source.columns]
        elif kind == "table":
            series = getattr(spec.source, "name", None)
            cut["series"] = None if series is None else str(series)
        return cut
    if kind == "shards":
        cut["dataset_id"] = dataset_id(spec.source)
        if input_kind in _ROW_KERNELS:
            rows = spec.chunk_rows if isinstance(spec.chunk_rows, int) else None
            return {**cut, "unit": "rows", "size": rows}
    if spec.chunk_lines is not None:
        return {**cut, "unit": "lines", "size": spec.chunk_lines}
    whitespace = input_kind == "text" or kind == "text"
    return {**cut, "unit": "bytes", "size": spec.chunk_bytes, "at_whitespace": whitespace}


def recut(cut: Mapping[str, Any], data: Any, pipeline: Any = None) -> Iterator[Any]:
    """The chunks that ``describe_cut`` described, cut again from ``data``: rows (a DataFrame,
    Series, array or list) for row cuts; bytes, text or a file's path for byte and line cuts; a
    shard set (a list of shards or its URL, opened with ``pipeline`` or $CES_ENCRYPTION_KEY)
    when the input was one. A malformed ``cut`` is a ConfigError; a split function's cut is a
    JobDefinitionError (that function ran on the client and is nowhere else)."""
    unit, size, source = _checked_cut(cut)
    if unit == "split":
        raise JobDefinitionError(
            f"the input was cut by the job's own split function {str(cut.get('split'))[:80]!r}, "
            "which ran on the client and is not recorded: its chunks cannot be cut again here"
        )
    if source == "shards":
        sizes = {f"chunk_{unit}": size} if size is not None else {}
        if pipeline is None and isinstance(data, (str, os.PathLike)):
            from wgtlab import ces

            data = ces.load(os.fspath(data))  # a shard list is known by its shards' magic
        yield from iter_chunks(InputSpec(data, pipeline=pipeline, **sizes), cut["kernel_input"])
        return
    whitespace = bool(cut.get("at_whitespace"))
    if unit == "rows":
        yield from _row_chunks(data, size)
        return
    if source == "file" and isinstance(data, (str, os.PathLike)):
        path = Path(data)
        spec = InputSpec(path, **({f"chunk_{unit}": size} if size is not None else {}))
        yield from _file_chunks(path, spec, "text" if whitespace else "bytes")
        return
    if isinstance(data, os.PathLike):
        data = Path(data).read_bytes()
    raw = data.encode() if isinstance(data, str) else bytes(data)
    if unit == "lines":
        assert size is not None  # _checked_cut: a line cut has a size
        yield from _line_chunks(raw, size)
        return
    yield from _byte_chunks(raw, size or default_chunk_bytes(len(raw)), at_whitespace=whitespace)


def _checked_cut(cut: Mapping[str, Any]) -> tuple[str, int | None, str]:
    if not isinstance(cut, Mapping):
        raise ConfigError(f"a cut is a mapping of its fields, got {type(cut).__name__}")
    unit, size, source = cut.get("unit"), cut.get("size"), cut.get("source")
    if unit not in CUT_UNITS:
        raise ConfigError(f"unknown chunk unit {str(unit)[:40]!r}; known: {', '.join(CUT_UNITS)}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size <= 0):
        raise ConfigError(f"a chunk size is a positive int or null, got {str(size)[:40]!r}")
    if unit == "lines" and size is None:
        raise ConfigError("a cut in lines needs its size")
    if unit == "rows" and size is None and source != "shards":
        raise ConfigError("a cut in rows needs its size")
    if not isinstance(source, str) or not isinstance(cut.get("kernel_input"), str):
        raise ConfigError("a cut names its source kind and the kernel's input kind")
    return unit, size, source


def _is_default_split(splitter: Callable[[Any], Any]) -> bool:
    # ``wgtlab.jobs.job`` imports this module, so its default split is recognised by name.
    return (
        getattr(splitter, "__module__", None) == "wgtlab.jobs.job"
        and getattr(splitter, "__qualname__", None) == "_default_split"
    )


def dataset_id(source: Any) -> str | None:
    """A CES shard set's dataset id (hex), from a shard's header or the manifest; None if
    neither can be read (the shard set itself is read when the job runs)."""
    from wgtlab.ces.format import HEADER_BYTES, ShardHeader
    from wgtlab.ces.store import location, read_manifest
    from wgtlab.errors import WgtError

    try:
        if isinstance(source, (list, tuple)):
            first = next(bytes(s[:HEADER_BYTES]) for s in source if s is not None)
            return ShardHeader.parse(first).dataset_id.hex()
        fs, root = location(source)
        return read_manifest(fs, root).dataset_id or None
    except (StopIteration, WgtError, OSError):
        return None
