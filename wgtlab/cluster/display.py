"""The notebook card of a cluster: its kind, one line of detail, one row per worker (trust,
tasks, simulated fault). ``Cluster._repr_html_`` fills it for every kind of cluster."""

from __future__ import annotations

from collections.abc import Sequence

from wgtlab.cluster.faults import Fault
from wgtlab.trust.ledger import WorkerState
from wgtlab.views import render, worker_rows

_TEMPLATES = "wgtlab.cluster.templates"


def fault_note(fault: Fault | None) -> str:
    if fault is None:
        return ""
    return f"{type(fault).__name__} ({fault.rate:.0%} of tasks)"


def cluster_html(
    kind: str,
    detail: str,
    workers: Sequence[tuple[str, WorkerState, Fault | None]],
    threshold: float,
) -> str:
    """A compact card: ``kind`` (e.g. "LocalCluster"), ``detail``, and a row for each
    ``(name, trust state, simulated fault)``, judged by the policy's quarantine ``threshold``."""
    rows = worker_rows(
        [(name, state, fault_note(fault)) for name, state, fault in workers], threshold
    )
    table = render("worker_table.html", rows=rows, note_title="simulated fault")
    return render("cluster.html", _TEMPLATES, kind=kind, detail=detail, table=table)
