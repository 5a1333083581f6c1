"""The notebook view of a cluster: its workers, their keys, trust and simulated faults.

Shared by ``LocalCluster`` and ``DaskCluster`` (anything with the cluster interface).
"""

from __future__ import annotations

from typing import Any

from wgtlab.cluster.identity import fingerprint
from wgtlab.views import render, worker_rows

_TEMPLATES = "wgtlab.cluster.templates"


def worker_ids(cluster: Any) -> dict[str, str]:
    """Each worker's name -> its trust-ledger id (the fingerprint of its key)."""
    return {name: fingerprint(key) for name, key in cluster.identities().items()}


def fault_note(fault: Any) -> str:
    if fault is None:
        return ""
    return f"{type(fault).__name__} ({fault.rate:.0%} of tasks)"


def cluster_html(cluster: Any, kind: str, detail: str) -> str:
    """A compact card: ``kind`` (e.g. "LocalCluster"), ``detail``, one row per worker."""
    ids = worker_ids(cluster)
    states = cluster.ledger.states(ids.values())
    faults = getattr(cluster, "faults", None) or {}
    rows = worker_rows(
        [(name, states[ids[name]], fault_note(faults.get(name))) for name in cluster.worker_names()]
    )
    table = render("worker_table.html", rows=rows, note_title="simulated fault")
    return render("cluster.html", _TEMPLATES, kind=kind, detail=detail, table=table)
