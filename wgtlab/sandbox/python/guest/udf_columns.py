"""Columnar chunk payloads ("wgt-columns-1"): typed little-endian columns back into the values a
@wgt.udf function sees. Standard library only: it runs in the guest, and on the host in tests.

A payload is ``MAGIC``, one line of JSON (the header), then the body. The header holds
``shape`` ("records", "columns" or "list"), ``rows`` and ``columns``: for each, ``[name, kind,
start, stop, missing_start, missing_stop]``, byte ranges in the body. ``kind`` is a
``memoryview`` format ("d" float64, "q" int64, "Q" uint64, "?" bool), "str" (UTF-8 text joined
by NUL, which no value contains) or "json" (a JSON list, for anything else). The missing range
holds the int64 row numbers whose value is None.
"""

import gc
import json
from collections.abc import Callable
from typing import Any

MAGIC = b"\x00wgt-columns-1\n"
_MAX_BUILT_WIDTH = 32


def _row_builder(width: int) -> Callable[..., list[dict[str, Any]]]:
    """A function making row dicts of ``width`` columns with a dict display, over twice as fast
    as ``dict(zip(names, row))``; made at import, so the runner's snapshot holds them built."""
    names = ", ".join(f"n{i}" for i in range(width))
    columns = ", ".join(f"c{i}" for i in range(width))
    values = "".join(f"x{i}, " for i in range(width))
    pairs = ", ".join(f"n{i}: x{i}" for i in range(width))
    rows = f"zip({columns}, strict=True)"
    return eval(f"lambda {names}, {columns}: [{{{pairs}}} for {values} in {rows}]")


_ROW_BUILDERS = [_row_builder(width) for width in range(1, _MAX_BUILT_WIDTH + 1)]


def decode_columns(data: bytes) -> object:
    """The function's argument from a payload: a list of row dicts, a dict of column lists, or
    one list. Built at C speed (``memoryview.cast``, ``str.split``), not parsed per value."""
    # Only new containers are made here, none of them cyclic: collecting while they are made
    # would rescan them again and again for nothing.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _decode(data)
    finally:
        if collecting:
            gc.enable()


def _decode(data: bytes) -> object:
    end = data.index(b"\n", len(MAGIC))
    header = json.loads(data[len(MAGIC) : end])
    body = memoryview(data)[end + 1 :]
    rows = header["rows"]
    columns: dict[str, list[Any]] = {}
    for name, kind, start, stop, missing_start, missing_stop in header["columns"]:
        part = body[start:stop]
        values: list[Any]
        if kind == "str":
            values = str(part, "utf-8").split("\x00") if rows else []
        elif kind == "json":
            values = json.loads(str(part, "utf-8"))
        else:
            values = part.cast(kind).tolist()
        if missing_stop > missing_start:
            _as_none(values, body[missing_start:missing_stop].cast("q").tolist())
        columns[name] = values
    shape = header["shape"]
    if shape == "list":
        return next(iter(columns.values()))
    if shape == "columns":
        return columns
    if not columns:
        return []
    if len(columns) <= _MAX_BUILT_WIDTH:
        return _ROW_BUILDERS[len(columns) - 1](*columns, *columns.values())
    names = tuple(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _as_none(values: list[Any], missing: list[int]) -> None:
    for i in missing:
        values[i] = None
