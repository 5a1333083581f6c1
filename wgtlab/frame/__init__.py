"""Verified DataFrame analytics: ``wgt.frame(df)`` and ``wgt.sql(...)``, computed by generated
WebAssembly on untrusted workers and verified like any job. Pandas is the oracle: results have
pandas' shapes, dtypes and missing-value rules.

``wgt.frame`` is this package, and calling it is ``frame(data)``: the package and the function
share the name, so the module is made callable rather than one shadowing the other.
"""

from __future__ import annotations

import sys
import types
from typing import Any as _Any

from wgtlab.frame.api import Frame, GroupBy, Query, QueryJob, Series, frame

__all__ = ["Frame", "GroupBy", "Query", "QueryJob", "Series", "frame"]


class _CallableModule(types.ModuleType):
    def __call__(
        self, data: _Any, *, pipeline: _Any = None, chunk_rows: int | None = None
    ) -> Frame:
        return frame(data, pipeline=pipeline, chunk_rows=chunk_rows)

    __call__.__doc__ = frame.__doc__


sys.modules[__name__].__class__ = _CallableModule
