"""Cutting a job's input into chunks: rows of tables and arrays, bytes, text, files, CES shards.

Chunks are produced lazily and in order, so a large file never sits in memory whole. Text is cut
at whitespace, so no word or line is split between two chunks.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from wgtlab import defaults
from wgtlab.errors import JobDefinitionError

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
        yield from _row_chunks(_shards_as_dataframe(spec), spec.chunk_rows)
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
    if chunk_rows is None or chunk_rows == "auto":  # "auto" is resolved when planned
        chunk_rows = max(1, default_chunk_bytes(_nbytes(source)) * n // max(1, _nbytes(source)))
    sliceable = source.iloc if hasattr(source, "iloc") else source
    for start in range(0, n, chunk_rows):
        yield sliceable[start : start + chunk_rows]


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


def _shards_as_dataframe(spec: InputSpec) -> Any:
    from wgtlab.ces.frames import dataframe_from_shards

    shards, pipeline = _shard_source(spec.source, spec.pipeline)
    return dataframe_from_shards(shards, pipeline)
