"""pandas DataFrames as CES shard sets, through Parquet (pyarrow): dtypes and index survive.

Parquet keeps column types, categoricals, time zones and the index in its pandas metadata, and
is already compressed per column; CES then seals and shards the file's bytes as any other data.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

from wgtlab.ces.pipeline import CESPipeline
from wgtlab.errors import ConfigError, IntegrityError

if TYPE_CHECKING:
    import pandas as pd


def dataframe_to_parquet(df: pd.DataFrame) -> bytes:
    """``df`` as Parquet bytes, index included."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise ConfigError(f"shard_dataframe takes a pandas DataFrame, not {type(df).__name__}")
    buffer = io.BytesIO()
    try:
        df.to_parquet(buffer, engine="pyarrow", index=True)
    except (ValueError, TypeError, ImportError) as exc:
        raise ConfigError(f"this DataFrame cannot be stored as Parquet: {exc}") from exc
    return buffer.getvalue()


def shard_dataframe(df: pd.DataFrame, pipeline: CESPipeline) -> list[bytes]:
    """The shards of ``df`` (as Parquet), made by ``pipeline``."""
    return pipeline.process(dataframe_to_parquet(df))


def dataframe_from_shards(
    shards: Sequence[bytes | None], pipeline: CESPipeline, present: Sequence[bool] | None = None
) -> pd.DataFrame:
    """The DataFrame that ``shard_dataframe`` sharded, with its dtypes and index."""
    import pandas as pd

    data = pipeline.reconstruct(shards, present)
    try:
        return pd.read_parquet(io.BytesIO(data), engine="pyarrow")
    except Exception as exc:  # authenticated bytes that are not Parquet: not from shard_dataframe
        raise IntegrityError(
            "the shards decrypt fine but do not hold a DataFrame; were they made by "
            f"shard_dataframe? ({type(exc).__name__})"
        ) from exc
