"""The session's default cluster: what ``job.run()`` uses when no ``on=`` is given; and what
makes a result's receipt (``JobResult.receipt()``).

The cluster and receipts layers sit above this one, so they are reached through factories that
the package's public face installs (``wgtlab/__init__.py``); ``%wgt cluster`` replaces the
session cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from wgtlab.errors import JobDefinitionError

if TYPE_CHECKING:
    from wgtlab.jobs.plan import JobRunner
    from wgtlab.jobs.result import JobResult

_lock = threading.Lock()
_session_cluster: JobRunner | None = None
default_cluster_factory: Callable[[], JobRunner] | None = None
# (result, identity key or None) -> wgt.Receipt
receipt_factory: Callable[[JobResult, Any], Any] | None = None


def set_session_cluster(cluster: JobRunner | None) -> None:
    global _session_cluster
    with _lock:
        _session_cluster = cluster


def session_cluster() -> JobRunner | None:
    return _session_cluster


def default_cluster() -> JobRunner:
    """The session cluster, creating one from the factory on first use."""
    global _session_cluster
    with _lock:
        if _session_cluster is None:
            if default_cluster_factory is None:
                raise JobDefinitionError(
                    "no cluster given: run with job.run(on=wgt.LocalCluster())"
                )
            _session_cluster = default_cluster_factory()
        return _session_cluster
