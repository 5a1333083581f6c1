"""How a chunk (pandas, numpy, pyarrow or plain Python) becomes the payload a @wgt.udf reads.

DataFrames arrive as a list of row dicts ("records") or a dict of column lists ("columns"); a
Series or array as a list; missing values (NaN, None, NA, NaT) as None; dates as ISO strings.
DataFrames, Series and 1-D numeric arrays travel as typed columns (guest/udf_columns.py),
encoded here with numpy; everything else, and any column of other types, as JSON.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import json
import math
from typing import Any

from wgtlab.errors import ConfigError
from wgtlab.sandbox.python.guest.udf_columns import MAGIC, decode_columns

__all__ = ["ROW_LAYOUTS", "chunk_json", "chunk_payload", "chunk_value"]

ROW_LAYOUTS = ("records", "columns")


def _default(value: Any) -> Any:
    """JSON for the types pandas and numpy hand out inside lists."""
    if _is_missing(value):  # pd.NaT is a datetime too: it must not become "NaT"
        return None
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (decimal.Decimal, fractions.Fraction)):
        return float(value)
    module = type(value).__module__.split(".")[0]
    if module in ("numpy", "pandas", "pyarrow"):
        if hasattr(value, "item"):  # numpy scalars
            return value.item()
        if hasattr(value, "isoformat"):  # pd.Timestamp, pd.Timedelta
            return value.isoformat()
        if hasattr(value, "as_py"):  # pyarrow scalars
            return value.as_py()
        if hasattr(value, "tolist"):
            return value.tolist()
    raise TypeError(
        f"a chunk value of type {type(value).__name__} ({value!r:.60}) cannot be sent as JSON; "
        "give numbers, strings, booleans, None, dates, lists or dicts (or use input='bytes')"
    )


def _is_missing(value: Any) -> bool:
    if type(value).__module__.split(".")[0] not in ("numpy", "pandas", "pyarrow"):
        return False
    try:
        import pandas as pd

        return bool(pd.isna(value)) if not hasattr(value, "__len__") else False
    except (ImportError, TypeError, ValueError):
        return False


def _column_values(series: Any) -> list[Any]:
    """A pandas Series as a list, with every kind of missing value as None."""
    values = series.tolist()
    mask = series.isna().to_numpy()
    if mask.any():
        for i in mask.nonzero()[0]:
            values[i] = None
    return values


def _frame_columns(frame: Any) -> dict[str, list[Any]]:
    names = [str(c) for c in frame.columns]
    if len(set(names)) != len(names):
        raise ConfigError(
            f"the chunk's DataFrame has duplicate column names {names}; rename them first"
        )
    return {name: _column_values(frame.iloc[:, i]) for i, name in enumerate(names)}


def _float_list(values: list[Any]) -> list[Any]:
    return [None if isinstance(v, float) and math.isnan(v) else v for v in values]


def to_jsonable(chunk: Any, rows: str = "records") -> Any:
    """The value a function receives for ``chunk`` (before JSON), per the row layout ``rows``."""
    module = type(chunk).__module__.split(".")[0]
    if module == "pandas":
        import pandas as pd

        if isinstance(chunk, pd.DataFrame):
            columns = _frame_columns(chunk)
            if rows == "columns":
                return columns
            names = list(columns)
            return [
                dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)
            ]
        if isinstance(chunk, (pd.Series, pd.Index)):
            return _column_values(pd.Series(chunk))
    if module == "numpy" and hasattr(chunk, "tolist"):
        values = chunk.tolist()
        if getattr(chunk, "ndim", 0) == 1 and chunk.dtype.kind == "f":
            return _float_list(values)
        return values
    if module == "pyarrow":
        if hasattr(chunk, "to_pylist") and hasattr(chunk, "schema"):  # Table, RecordBatch
            return chunk.to_pydict() if rows == "columns" else chunk.to_pylist()
        if hasattr(chunk, "to_pylist"):  # Array, ChunkedArray
            return chunk.to_pylist()
    if isinstance(chunk, (bytes, bytearray, memoryview)):
        raise ConfigError(
            "this udf takes records (JSON values) but the chunk is bytes; decorate the function "
            "with @wgt.udf(input='bytes') to receive bytes"
        )
    return _nan_as_none(chunk)


def _nan_as_none(value: Any) -> Any:
    """Plain Python values with float NaN as None, as in pandas and numpy chunks."""
    if isinstance(value, float):
        return None if math.isnan(value) else value
    if isinstance(value, list | tuple):
        return [_nan_as_none(v) for v in value]
    if isinstance(value, dict):
        return {k: _nan_as_none(v) for k, v in value.items()}
    return value


def chunk_json(chunk: Any, rows: str = "records") -> bytes:
    """UTF-8 JSON text of ``chunk`` as the guest receives it (see the module docstring)."""
    value = to_jsonable(chunk, rows)
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_default)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the chunk cannot be sent to the sandbox as JSON: {exc}") from None
    return text.encode("utf-8")


# --- typed columns -----------------------------------------------------------------------------

_Column = tuple[str, bytes, Any]  # kind, data, row numbers of missing values (int64 array)


def _json_column(series: Any) -> _Column:
    text = json.dumps(
        _column_values(series), ensure_ascii=False, separators=(",", ":"), default=_default
    )
    return "json", text.encode("utf-8"), None


def _text_column(series: Any, values: list[Any], missing: Any) -> _Column | None:
    """Strings as one NUL-joined UTF-8 buffer, or None when a value is not a str, holds a NUL
    or cannot be UTF-8 (lone surrogates): then the column goes as JSON."""
    for i in missing.tolist():
        values[i] = ""
    try:
        text = "\0".join(values)
    except TypeError:  # a value that is not a str
        return None
    if text.count("\0") != max(len(values) - 1, 0):
        return None
    try:
        return "str", text.encode("utf-8"), missing
    except UnicodeEncodeError:
        return None


def _series_column(series: Any) -> _Column:
    import numpy as np
    import pandas as pd

    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "fiub":
        if dtype.kind == "f":
            values = series.to_numpy(dtype="<f8")
            return "d", values.tobytes(), np.flatnonzero(np.isnan(values))
        if dtype.kind == "b":
            return "?", series.to_numpy(dtype=np.bool_).tobytes(), None
        if dtype.kind == "u" and dtype.itemsize == 8:
            return "Q", series.to_numpy(dtype="<u8").tobytes(), None
        return "q", series.to_numpy(dtype="<i8").tobytes(), None
    mask = series.isna().to_numpy(dtype=np.bool_)
    missing = np.flatnonzero(mask)
    objects = isinstance(dtype, np.dtype) and dtype.kind == "O"
    if isinstance(dtype, pd.StringDtype) or (
        objects and pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty")
    ):
        if objects and missing.size == len(series) and len(series):
            return _json_column(series)  # all missing: nothing says these are strings
        column = _text_column(series, series.tolist(), missing)
        return column if column is not None else _json_column(series)
    if isinstance(dtype, (pd.Int64Dtype, pd.Int32Dtype, pd.Int16Dtype, pd.Int8Dtype)):
        values = series.to_numpy(dtype="<i8", na_value=0)
        return "q", values.tobytes(), missing
    if isinstance(dtype, (pd.Float64Dtype, pd.Float32Dtype)):
        values = series.to_numpy(dtype="<f8", na_value=np.nan)
        return "d", values.tobytes(), np.flatnonzero(np.isnan(values))
    if isinstance(dtype, pd.BooleanDtype):
        return "?", series.to_numpy(dtype=np.bool_, na_value=False).tobytes(), missing
    return _json_column(series)


def _columns_payload(shape: str, rows: int, columns: dict[str, _Column]) -> bytes:
    parts: list[bytes] = []
    entries: list[list[Any]] = []
    offset = 0

    def put(data: bytes) -> tuple[int, int]:
        nonlocal offset
        start = offset
        parts.append(data)
        offset += len(data)
        pad = -offset % 8  # every buffer starts 8-aligned
        if pad:
            parts.append(b"\0" * pad)
            offset += pad
        return start, start + len(data)

    for name, (kind, data, missing) in columns.items():
        start, stop = put(data)
        missing_start = missing_stop = start
        if missing is not None and len(missing):
            missing_start, missing_stop = put(missing.astype("<i8").tobytes())
        entries.append([name, kind, start, stop, missing_start, missing_stop])
    header = json.dumps({"shape": shape, "rows": rows, "columns": entries}, separators=(",", ":"))
    return b"".join([MAGIC, header.encode("ascii"), b"\n", *parts])


def _columnar(chunk: Any, rows: str) -> bytes | None:
    """The typed-column payload of ``chunk``, or None for chunks that travel as JSON."""
    module = type(chunk).__module__.split(".")[0]
    if module == "pandas":
        import pandas as pd

        if isinstance(chunk, pd.DataFrame):
            names = [str(c) for c in chunk.columns]
            if len(set(names)) != len(names):
                raise ConfigError(
                    f"the chunk's DataFrame has duplicate column names {names}; rename them first"
                )
            columns = {name: _series_column(chunk.iloc[:, i]) for i, name in enumerate(names)}
            shape = "columns" if rows == "columns" else "records"
            return _columns_payload(shape, len(chunk), columns)
        if isinstance(chunk, (pd.Series, pd.Index)):
            series = pd.Series(chunk)
            return _columns_payload("list", len(series), {"": _series_column(series)})
    if module == "numpy" and getattr(chunk, "ndim", 0) == 1 and chunk.dtype.kind in "fiub":
        import pandas as pd

        return _columns_payload("list", len(chunk), {"": _series_column(pd.Series(chunk))})
    return None


def chunk_payload(chunk: Any, rows: str = "records") -> bytes:
    """What the guest receives for ``chunk``: typed columns for DataFrames, Series and 1-D
    numeric arrays, JSON (``chunk_json``) for everything else."""
    payload = _columnar(chunk, rows)
    return payload if payload is not None else chunk_json(chunk, rows)


def chunk_value(payload: bytes) -> Any:
    """The value the function is called with for ``payload`` (as the guest builds it)."""
    if payload.startswith(MAGIC):
        return decode_columns(payload)
    return json.loads(payload)
