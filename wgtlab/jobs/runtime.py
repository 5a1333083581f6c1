"""The session's default cluster: what ``job.run()`` uses when no ``on=`` is given.

The cluster layer sits above this one, so it is reached through a factory that the package's
public face installs (``wgtlab/__init__.py``); ``%wgt cluster`` replaces the session cluster.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from wgtlab.errors import JobDefinitionError

_lock = threading.Lock()
_session_cluster: Any = None
default_cluster_factory: Callable[[], Any] | None = None


def set_session_cluster(cluster: Any) -> None:
    global _session_cluster
    with _lock:
        _session_cluster = cluster


def session_cluster() -> Any:
    return _session_cluster


def default_cluster() -> Any:
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
