"""How a chunk (pandas, numpy, pyarrow or plain Python) becomes the JSON a @wgt.udf function reads.

DataFrames arrive as a list of row dicts ("records") or a dict of column lists ("columns"); a
Series or array as a list; missing values (NaN, None, NA, NaT) as None; dates as ISO strings.
"""

from __future__ import annotations

import datetime
import decimal
import fractions
import json
import math
from typing import Any

from wgtlab.errors import ConfigError

__all__ = ["ROW_LAYOUTS", "chunk_json"]

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
