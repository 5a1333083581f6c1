"""Verified DataFrame analytics: ``wgt.frame(df)`` and ``wgt.sql(...)``, computed by generated
WebAssembly on untrusted workers and verified like any job. Pandas is the oracle: results have
pandas' shapes, dtypes and missing-value rules."""

from wgtlab.frame.api import Frame, GroupBy, Query, QueryJob, Series, frame

__all__ = ["Frame", "GroupBy", "Query", "QueryJob", "Series", "frame"]
