"""Matplotlib figures of trust and verification: score per worker over time, and which worker
agreed, dissented or failed on which chunk. Built without pyplot, so they render headless (Agg).

Notebooks import them as ``wgtlab.notebook.plots``; ``wgtlab demo`` saves them as PNG files.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from wgtlab import defaults
from wgtlab.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

# Okabe & Ito's palette, distinguishable with every common colour-vision deficiency.
OKABE_ITO = (
    "#0072B2",  # blue
    "#E69F00",  # orange
    "#009E73",  # bluish green
    "#CC79A7",  # reddish purple
    "#56B4E9",  # sky blue
    "#D55E00",  # vermillion
    "#F0E442",  # yellow
    "#000000",  # black
)
OUTCOMES = ("not run", "agreed", "dissented", "failed")  # grid codes 0..3
OUTCOME_COLOURS = {
    "not run": "#E8E8E8",
    "agreed": "#0072B2",
    "dissented": "#E69F00",
    "failed": "#000000",
}
# A task the worker itself failed (JobResult.verification) shows as failed in the grid.
_WORKER_FAILURES = {"crashed": "failed", "stalled": "failed", "rejected": "failed"}
_LINESTYLES = ("-", "--", ":", "-.")


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"{what} needs the columns {list(columns)}; missing {missing} "
            f"(got {list(frame.columns)})"
        )


def _natural(name: object) -> list[object]:
    """Sort key that puts local-2 before local-10."""
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", str(name))]


def _short(worker: str) -> str:
    return worker if len(worker) <= 14 else worker[:12] + "…"


def _figure(ax: Axes | None, size: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is not None:
        return ax.figure, ax  # type: ignore[return-value]
    fig = Figure(figsize=size, layout="constrained")
    return fig, fig.add_subplot()


def trust_timeline(
    history: pd.DataFrame,
    threshold: float = defaults.QUARANTINE_THRESHOLD,
    *,
    x: str = "seq",
    ax: Axes | None = None,
) -> Figure:
    """Trust score of each worker after every outcome, with the quarantine threshold drawn.

    ``history`` is :meth:`TrustLedger.history` (at least ``worker``, ``score`` and the ``x``
    column: ``"seq"`` for ledger order or ``"time"``); workers are named by ``label`` when it is
    there. ``threshold``: the quarantine threshold of the policy in use
    (``cluster.policy.quarantine_threshold``). A cross marks each point where a worker fell
    below it.
    """
    _require(history, ("worker", "score", x), "trust_timeline")
    fig, ax = _figure(ax, (8.0, 4.0))
    ax.axhspan(0.0, threshold, color="#D55E00", alpha=0.08, lw=0, label="quarantine zone")
    ax.axhline(threshold, color="#000000", ls="--", lw=1.0, label=f"threshold {threshold:g}")
    frame = history.sort_values(x, kind="stable")
    names = _display_names(frame)
    for k, (worker, rows) in enumerate(
        sorted(frame.groupby("worker", sort=False), key=lambda item: _natural(names[item[0]]))
    ):
        colour = OKABE_ITO[k % len(OKABE_ITO)]
        style = _LINESTYLES[(k // len(OKABE_ITO)) % len(_LINESTYLES)]
        xs, scores = rows[x].to_numpy(), rows["score"].to_numpy(dtype=float)
        ax.plot(
            xs, scores, drawstyle="steps-post", color=colour, ls=style, lw=1.6,
            marker="o" if len(xs) <= 40 else None, ms=3, label=names[worker],
        )  # fmt: skip
        below = scores < threshold
        crossed = below & ~np.concatenate(([False], below[:-1]))  # where a dip below begins
        if crossed.any():
            ax.scatter(xs[crossed], scores[crossed], marker="x", s=60, color=colour, zorder=3)
    if frame.empty:
        ax.text(0.5, 0.5, "no outcomes recorded yet", ha="center", va="center",
                transform=ax.transAxes, color="#555555")  # fmt: skip
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("outcome (ledger order)" if x == "seq" else x)
    ax.set_ylabel("trust score")
    ax.set_title("Trust score per worker")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", frameon=False)
    return fig


def _display_names(history: pd.DataFrame) -> dict[str, str]:
    """Label if known (the latest one per worker), else a shortened id; a label shared by
    several ids gets the id appended so the lines stay apart."""
    names: dict[str, str] = {}
    if "label" in history.columns:
        for worker, label in zip(history["worker"], history["label"], strict=True):
            if isinstance(label, str) and label:
                names[worker] = label
    for worker in history["worker"].unique():
        names.setdefault(worker, _short(str(worker)))
    counts: dict[str, int] = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    return {
        w: f"{n} ({_short(str(w))[:8]})" if counts[n] > 1 and n != w else n
        for w, n in names.items()
    }


def verification_grid(verification: pd.DataFrame, *, ax: Axes | None = None) -> Figure:
    """Chunks x workers, each cell coloured by the outcome of that worker's replica of that
    chunk: agreed, dissented, failed (no quorum, or the worker crashed, stalled or was rejected),
    or not run (no row for the pair).

    ``verification`` needs ``chunk``, ``worker`` and ``outcome`` columns; for a pair listed
    twice (a retry) the last row wins. Integer chunks are shown over their whole range, so a
    chunk nobody ran shows as an empty column.
    """
    _require(verification, ("chunk", "worker", "outcome"), "verification_grid")
    verification = verification.assign(
        outcome=verification["outcome"].map(lambda o: _WORKER_FAILURES.get(o, o))
    )
    bad = sorted(set(verification["outcome"]) - set(OUTCOMES[1:]), key=str)
    if bad:
        raise ConfigError(
            "verification_grid outcomes must be agreed, dissented, failed, crashed, stalled "
            f"or rejected; got {bad}"
        )
    latest = verification.drop_duplicates(["chunk", "worker"], keep="last")
    workers = sorted(latest["worker"].unique(), key=_natural)
    chunks = sorted(latest["chunk"].unique())
    integral = bool(chunks) and all(isinstance(c, (int, np.integer)) for c in chunks)
    if integral:
        chunks = list(range(int(chunks[0]), int(chunks[-1]) + 1))
    col = {c: i for i, c in enumerate(chunks)}
    row = {w: i for i, w in enumerate(workers)}
    code = {name: i for i, name in enumerate(OUTCOMES)}
    if not chunks:
        fig, ax = _figure(ax, (6.0, 2.5))
        ax.text(0.5, 0.5, "no chunks verified yet", ha="center", va="center",
                transform=ax.transAxes, color="#555555")  # fmt: skip
        ax.set_axis_off()
        return fig
    grid = np.zeros((len(workers), len(chunks)), dtype=np.int8)
    for chunk, worker, outcome in latest[["chunk", "worker", "outcome"]].itertuples(index=False):
        grid[row[worker], col[chunk]] = code[outcome]

    size = (min(14.0, 3.5 + 0.12 * len(chunks)), min(10.0, 1.6 + 0.32 * len(workers)))
    fig, ax = _figure(ax, size)
    cmap = ListedColormap([OUTCOME_COLOURS[name] for name in OUTCOMES])
    first = int(chunks[0]) if integral else 0
    ax.imshow(
        grid, cmap=cmap, norm=BoundaryNorm(np.arange(-0.5, len(OUTCOMES)), cmap.N),
        aspect="auto", interpolation="nearest",
        extent=(first - 0.5, first + len(chunks) - 0.5, len(workers) - 0.5, -0.5),
    )  # fmt: skip
    ax.set_yticks(range(len(workers)), [_short(str(w)) for w in workers])
    if not integral:
        ax.set_xticks(range(len(chunks)), [str(c) for c in chunks], rotation=90)
    if len(chunks) <= 80 and len(workers) <= 40:  # white lines between cells while they show
        ax.set_xticks([first + i - 0.5 for i in range(len(chunks) + 1)], minor=True)
        ax.set_yticks([i - 0.5 for i in range(len(workers) + 1)], minor=True)
        ax.grid(which="minor", color="white", lw=1.0)
        ax.tick_params(which="minor", length=0)
    ax.set_xlabel("chunk")
    ax.set_ylabel("worker")
    ax.set_title("Verification outcomes")
    counts = np.bincount(grid.ravel(), minlength=len(OUTCOMES))
    handles = [
        Patch(facecolor=OUTCOME_COLOURS[name], edgecolor="#888888", label=f"{name} ({n})")
        for name, n in zip(OUTCOMES, counts, strict=True)
    ]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5),
              fontsize="small", frameon=False)  # fmt: skip
    return fig
