"""The small real datasets in ``data/`` that the demo and the tutorials use (see data/README.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wgtlab.errors import ConfigError

FLIGHTS = "flights-2013-01.csv"


def data_dir() -> Path:
    """``data/`` of the wgtlab checkout this package was installed from (editable install)."""
    return Path(__file__).resolve().parents[1] / "data"


def path(name: str = FLIGHTS) -> Path:
    found = data_dir() / name
    if not found.is_file():
        raise ConfigError(
            f"sample dataset {name!r} not found in {data_dir()}; the samples ship with the "
            "wgtlab source tree: install it with `python -m pip install -e .` from a checkout"
        )
    return found


def flights() -> Any:
    """NYC flights of January 2013 as a pandas DataFrame (27,004 rows; CC0)."""
    import pandas as pd

    return pd.read_csv(path(FLIGHTS))
