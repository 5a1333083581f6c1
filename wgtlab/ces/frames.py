"""pandas DataFrames as CES shard sets, through Parquet (pyarrow): dtypes and index survive.

Parquet keeps column types, categoricals, time zones and the index in its pandas metadata, and
is already compressed per column; CES then seals and shards the file's bytes as any other data.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING

from wgtlab.ces.keys import KeyLike
from wgtlab.ces.pipeline import CESPipeline, as_pipeline
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


def shard_dataframe(df: pd.DataFrame, pipeline: KeyLike | CESPipeline | None = None) -> list[bytes]:
    """The shards of ``df`` (as Parquet), made by ``pipeline``: a ``CESPipeline``, a key (32
    bytes or 64 hex characters), or None for ``CESPipeline()`` (``$CES_ENCRYPTION_KEY``, else a
    random key with an ``EphemeralKeyWarning``)."""
    parquet = dataframe_to_parquet(df)
    return as_pipeline(pipeline, stacklevel=2).process(parquet)


def dataframe_from_shards(
    shards: Sequence[bytes | None],
    pipeline: KeyLike | CESPipeline | None = None,
    present: Sequence[bool] | None = None,
) -> pd.DataFrame:
    """The DataFrame that ``shard_dataframe`` sharded, with its dtypes and index; ``pipeline``
    as for ``shard_dataframe`` (the key the shards were sealed with)."""
    import pandas as pd

    data = as_pipeline(pipeline, stacklevel=2).reconstruct(shards, present)
    try:
        return pd.read_parquet(io.BytesIO(data), engine="pyarrow")
    except Exception as exc:  # authenticated bytes that are not Parquet: not from shard_dataframe
        raise IntegrityError(
            "the shards decrypt fine but do not hold a DataFrame; were they made by "
            f"shard_dataframe? ({type(exc).__name__})"
        ) from exc
