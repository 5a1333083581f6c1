"""The CES shard map: which shards of a set are present, damaged or missing, and whether the
set can still be rebuilt. A matplotlib figure without pyplot, so it renders headless (Agg)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle

from wgtlab.views import SHARD_COLOURS, shard_label

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["shard_map"]

_OK_TEXT, _BAD_TEXT = "#006B4F", "#B23A00"


def shard_map(report: Any, *, ax: Axes | None = None) -> Figure:
    """One square per shard position, coloured by state (ok, damaged, missing, foreign,
    duplicate), labelled data (d) or parity (p); the title says usable vs needed and whether
    the set is recoverable. ``report`` is a ``ShardSetReport`` (``wgt.ces.inspect``)."""
    shards = list(report.shards)
    header = report.header
    data_shards = header.data_shards if header is not None else None
    if ax is None:
        fig = Figure(figsize=(max(4.0, 0.62 * len(shards) + 1.2), 2.0), layout="constrained")
        ax = fig.add_subplot()
    else:
        fig = ax.figure  # type: ignore[assignment]
    for i, status in enumerate(shards):
        colour = SHARD_COLOURS.get(status.state, "#444444")
        missing = status.state == "missing"
        ax.add_patch(
            Rectangle(
                (i + 0.06, 0.06), 0.88, 0.88, facecolor="white" if missing else colour,
                edgecolor=colour, hatch="///" if missing else None, lw=1.5,
            )
        )  # fmt: skip
        ax.text(i + 0.5, 0.5, shard_label(status, data_shards), ha="center", va="center",
                fontsize=9, color="#333333" if missing else "white", weight="bold")  # fmt: skip
        if status.damaged_fragments:
            ax.text(i + 0.5, -0.18, f"{status.damaged_fragments} bad", ha="center", va="center",
                    fontsize=7, color=_BAD_TEXT)  # fmt: skip
    ax.set_xlim(-0.1, max(1, len(shards)) + 0.1)
    ax.set_ylim(-0.35, 1.05)
    ax.set_aspect("equal")
    ax.axis("off")
    verdict = "recoverable" if report.recoverable else "NOT recoverable"
    ax.set_title(
        f"Shard set: {report.usable} usable, {report.needed} needed — {verdict}",
        color=_OK_TEXT if report.recoverable else _BAD_TEXT, fontsize=11,
    )  # fmt: skip
    present = {s.state for s in shards}
    handles = [
        Patch(
            facecolor="white" if state == "missing" else colour, edgecolor=colour,
            hatch="///" if state == "missing" else None, label=state,
        )
        for state, colour in SHARD_COLOURS.items()
        if state in present or state in ("ok", "missing")
    ]  # fmt: skip
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.02), frameon=False,
              ncol=len(handles), fontsize="small")  # fmt: skip
    return fig
