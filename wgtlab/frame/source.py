"""Where a frame's rows come from (a DataFrame, a Parquet file or URL, a CES shard set), and
what is made from them once per frame on the trusted side: typed column arrays and dictionary
codes. Both are cached on the source, so a repeated query pays nothing for them.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import pandas as pd

from wgtlab import defaults
from wgtlab.errors import FrameError, NoSuchColumn
from wgtlab.frame.expr import Dtype
from wgtlab.frame.kernel import PayloadCache

__all__ = ["Dictionary", "Source", "open_source"]

_INTEGER_KINDS = "iu"


@dataclass(frozen=True)
class Dictionary:
    """A column's distinct values, sorted as pandas sorts groups (``sort=True``), and each row's
    code into them (-1: missing)."""

    codes: np.ndarray  # int32
    values: pd.Index

    def __len__(self) -> int:
        return len(self.values)


class Source:
    """A table of rows, read a column at a time. Subclasses give ``columns`` and ``_read``."""

    name: str

    def __init__(self, name: str) -> None:
        self.name = name
        self.chunk_rows: int | None = None  # rows per chunk; None: sized by the bytes a row takes
        self._rows_table: pd.DataFrame | None = None
        self._lock = threading.Lock()
        self._series: dict[str, pd.Series] = {}
        self._arrays: dict[tuple[str, str], np.ndarray] = {}
        self._dictionaries: dict[str, Dictionary] = {}
        self.payloads = PayloadCache(defaults.FRAME_PAYLOAD_CACHE_BYTES)

    @property
    def columns(self) -> list[str]:
        raise NotImplementedError

    @property
    def rows(self) -> int:
        raise NotImplementedError

    def _read(self, column: str) -> pd.Series:
        raise NotImplementedError

    # --- schema -------------------------------------------------------------------------------

    def series(self, column: str) -> pd.Series:
        self.check(column)
        with self._lock:
            if column not in self._series:
                self._series[column] = self._read(column)
            return self._series[column]

    def check(self, column: str) -> None:
        if column not in self.columns:
            shown = ", ".join(repr(c) for c in self.columns[:20])
            more = f" and {len(self.columns) - 20} more" if len(self.columns) > 20 else ""
            raise NoSuchColumn(f"{self.name} has no column {column!r}; its columns: {shown}{more}")

    def string_kind(self, column: str) -> str:
        """How a coded column orders: "text", "temporal" (dates, times, durations: compared
        with literals such as "2013-01-05"), or as a categorical "categories" (unordered:
        equality only) or "ordered"."""
        dtype = self.pandas_dtype(column)
        if isinstance(dtype, pd.CategoricalDtype):
            return "ordered" if dtype.ordered else "categories"
        return "temporal" if _is_temporal(dtype) else "text"

    def pandas_dtype(self, column: str) -> Any:
        return self.series(column).dtype

    def dtype(self, column: str) -> Dtype:
        """The expression dtype of ``column`` (FrameError if it has none)."""
        dtype = self.pandas_dtype(column)
        if isinstance(dtype, pd.CategoricalDtype):
            return "str"
        if pd.api.types.is_bool_dtype(dtype) and isinstance(dtype, np.dtype):
            return "bool"
        if isinstance(dtype, np.dtype):
            if dtype.kind == "f":
                return "f64"
            if dtype.kind in _INTEGER_KINDS:
                if dtype == np.uint64:
                    raise FrameError(
                        f"column {column!r} is uint64, which int64 cannot hold exactly; convert "
                        "it with .astype('int64') (values below 2**63) or .astype('float64')"
                    )
                return "i64"
            if dtype.kind == "O":
                return "str"
        if pd.api.types.is_string_dtype(dtype) or _is_temporal(dtype):
            return "str"  # carried as dictionary codes, like strings
        raise FrameError(
            f"column {column!r} has dtype {dtype}, which frames do not compute on yet; convert "
            "it (e.g. .astype('float64'), or dates to .astype('int64')) or use a @wgt.udf"
        )

    # --- what travels --------------------------------------------------------------------------

    def dictionary(self, column: str) -> Dictionary:
        """Dictionary codes of ``column``, made once (pandas' factorize, sorted)."""
        with self._lock:
            cached = self._dictionaries.get(column)
        if cached is not None:
            return cached
        series = self.series(column)
        made = _arrow_dictionary(series) or _pandas_dictionary(series)
        if isinstance(series.dtype, pd.CategoricalDtype):  # every category, in its order
            codes = np.ascontiguousarray(series.cat.codes.to_numpy(), dtype=np.int32)
            made = Dictionary(codes, pd.Index(series.cat.categories))
        if len(made) >= (1 << 31) - 1:
            raise FrameError(f"column {column!r} has too many distinct values to code")
        with self._lock:
            self._dictionaries.setdefault(column, made)
            return self._dictionaries[column]

    def prepare(self, columns: Sequence[tuple[str, str]]) -> None:
        """Make the dictionaries, then the arrays, of ``columns`` ((name, encoding) pairs) that
        are not made yet, several at once (the work runs outside the GIL)."""
        coded = {name for name, encoding in columns if encoding.startswith("code")}
        _at_once([partial(self.dictionary, n) for n in coded if n not in self._dictionaries])
        arrays = {(n, e) for n, e in columns if e != "code" and (n, e) not in self._arrays}
        _at_once([partial(self.array, n, e) for n, e in sorted(arrays)])

    def rows_table(self) -> pd.DataFrame:
        """A DataFrame of this source's rows and no columns (a RangeIndex): what a pass's job
        reads and cuts into row chunks; the kernel takes the columns from the source."""
        if self._rows_table is None:
            self._rows_table = pd.DataFrame(index=pd.RangeIndex(self.rows))
        return self._rows_table

    def array(self, column: str, encoding: str) -> np.ndarray:
        """``column`` as it travels: float64, int64, uint8 (bools) or int32 codes."""
        if encoding == "code":
            return self.dictionary(column).codes
        with self._lock:
            cached = self._arrays.get((column, encoding))
        if cached is not None:
            return cached
        if encoding in ("code8", "code16"):  # code + 1: missing (-1) becomes 0
            narrow = np.uint8 if encoding == "code8" else np.uint16
            made = (self.dictionary(column).codes + 1).astype(narrow)
        else:
            series = self.series(column)
            numpy_type = {"f64": np.float64, "i64": np.int64, "u8": np.uint8}[encoding]
            values = series.to_numpy()
            if encoding == "u8":
                values = (
                    values.view(np.uint8) if values.dtype == np.bool_ else values.astype(np.uint8)
                )
            made = np.ascontiguousarray(values, dtype=numpy_type)
        with self._lock:
            self._arrays[(column, encoding)] = made
        return made


def _at_once(work: list[Callable[[], object]]) -> None:
    """Run ``work`` in threads (one call: here)."""
    if len(work) < 2:
        for call in work:
            call()
        return
    with ThreadPoolExecutor(max_workers=min(len(work), os.cpu_count() or 1)) as pool:
        list(pool.map(lambda call: call(), work))


def _is_temporal(dtype: Any) -> bool:
    """Datetimes (with or without a time zone), timedeltas and periods: coded like strings,
    so they group, count, compare with date literals and take min and max exactly."""
    return bool(
        (isinstance(dtype, np.dtype) and dtype.kind in "mM")
        or isinstance(dtype, (pd.DatetimeTZDtype, pd.PeriodDtype))
    )


def _pandas_dictionary(series: pd.Series) -> Dictionary:
    codes, uniques = pd.factorize(series, sort=True, use_na_sentinel=True)
    values = uniques if isinstance(uniques, pd.Index) else pd.Index(uniques)
    return Dictionary(np.ascontiguousarray(codes, dtype=np.int32), values)


def _arrow_dictionary(series: pd.Series) -> Dictionary | None:
    """Arrow-backed strings (pandas' ``str``): Arrow's dictionary encoding, its dictionary
    sorted (code point order, as pandas sorts strings) and the codes renumbered: the same
    codes and values as ``pd.factorize(sort=True)``, in two thirds of the time. None for
    other columns."""
    dtype = series.dtype
    if not (isinstance(dtype, pd.StringDtype) and dtype.storage == "pyarrow"):
        return None
    import pyarrow as pa
    import pyarrow.compute as pc

    encoded = pc.dictionary_encode(pa.array(series.array))
    if isinstance(encoded, pa.ChunkedArray):
        encoded = encoded.combine_chunks()
    order = pc.sort_indices(encoded.dictionary).to_numpy()
    rank = np.empty(len(order), dtype=np.int32)
    rank[order] = np.arange(len(order), dtype=np.int32)
    indices = encoded.indices
    codes = rank[indices.fill_null(0).to_numpy()] if len(rank) else np.zeros(len(indices), np.int32)
    if indices.null_count:
        codes[indices.is_null().to_numpy(zero_copy_only=False)] = -1
    values = pd.Index(pd.array(encoded.dictionary.take(pa.array(order)), dtype=dtype))
    return Dictionary(np.ascontiguousarray(codes, dtype=np.int32), values)


class DataFrameSource(Source):
    def __init__(self, frame: pd.DataFrame, name: str = "the frame") -> None:
        super().__init__(name)
        if not all(isinstance(c, str) for c in frame.columns):
            frame = frame.rename(columns=str)
        if frame.columns.duplicated().any():
            duplicated = sorted(set(frame.columns[frame.columns.duplicated()]))
            raise FrameError(f"column names must be unique; repeated: {duplicated}")
        self.frame = frame

    @property
    def columns(self) -> list[str]:
        return list(self.frame.columns)

    @property
    def rows(self) -> int:
        return len(self.frame)

    def _read(self, column: str) -> pd.Series:
        return self.frame[column]


class ParquetSource(Source):
    """A Parquet file or fsspec URL; only the columns a query reads are read, each once."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        import pyarrow.parquet as pq

        super().__init__(f"the Parquet file {os.fspath(path)!r}")
        self.path = os.fspath(path)
        try:
            if "://" in self.path:
                import fsspec

                self._handle: Any = fsspec.open(self.path, "rb").open()
                self.file = pq.ParquetFile(self._handle)
            else:
                self.file = pq.ParquetFile(self.path)
        except (OSError, ValueError) as exc:
            raise FrameError(f"cannot read {self.name}: {exc}") from exc
        self._columns = [c for c in self.file.schema_arrow.names if c != "__index_level_0__"]

    @property
    def columns(self) -> list[str]:
        return self._columns

    @property
    def rows(self) -> int:
        return int(self.file.metadata.num_rows)

    def _read(self, column: str) -> pd.Series:
        table = self.file.read(columns=[column])
        return table.column(0).to_pandas().rename(column)


def open_source(data: Any, pipeline: Any = None) -> Source:
    """A DataFrame, a Parquet path or URL, or a CES shard set (list of shards, or the URL
    ``wgt.ces.save`` wrote, with ``pipeline``) -> its Source."""
    if isinstance(data, Source):
        return data
    if isinstance(data, pd.DataFrame):
        return DataFrameSource(data)
    if isinstance(data, pd.Series):
        return DataFrameSource(
            data.to_frame(name=str(data.name) if data.name is not None else "value")
        )
    from wgtlab.jobs.chunking import InputSpec, is_shard_list, shards_as_dataframe

    if pipeline is not None or is_shard_list(data):
        spec = InputSpec(data, pipeline=pipeline)
        return DataFrameSource(shards_as_dataframe(spec), name="the CES shard set")
    if isinstance(data, (str, os.PathLike)):
        return ParquetSource(data)
    raise FrameError(
        f"wgt.frame takes a pandas DataFrame, a Parquet path or URL, or a CES shard set; got "
        f"{type(data).__name__}"
    )
