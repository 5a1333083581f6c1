"""wgtlab: run untrusted compute in WebAssembly sandboxes from Jupyter, and prove its results.

This module is only the public face: it re-exports the stable names (see ``__all__``) from the
layer packages, importing each lazily on first use so ``import wgtlab`` stays fast.
"""

from __future__ import annotations

import importlib
import typing

from wgtlab import verify
from wgtlab.errors import *  # noqa: F403  (every error class is public at the top level)
from wgtlab.errors import __all__ as _error_names
from wgtlab.jobs import runtime as _runtime
from wgtlab.jobs.dsl import make_verify_callable as _make_verify_callable

if typing.TYPE_CHECKING:
    from wgtlab.cluster.local import LocalCluster

# ``wgt.verify`` is both the verification package (``wgt.verify.merkle_root``) and, inside a
# ``with wgt.Job(...)`` block, the DSL call ``wgt.verify("redundancy", replicas=3)``. Both
# modules are light (hashlib only), so this happens at import.
_make_verify_callable(verify)

__version__ = "0.1.0"

# public name -> "module" (a submodule) or "module:attribute"
_LAZY: dict[str, str] = {
    # sandbox
    "ResourceLimits": "wgtlab.sandbox.limits:ResourceLimits",
    "WasmModule": "wgtlab.sandbox.module:WasmModule",
    "ModuleCaps": "wgtlab.sandbox.limits:ModuleCaps",
    "Sandbox": "wgtlab.sandbox.runner:Sandbox",
    "TaskResult": "wgtlab.sandbox.runner:TaskResult",
    "kernels": "wgtlab.sandbox.kernels",
    "udf": "wgtlab.sandbox.python:udf",
    # CES
    "ces": "wgtlab.ces",
    "CESPipeline": "wgtlab.ces.pipeline:CESPipeline",
    # verification and trust
    "trust": "wgtlab.trust",
    "TrustLedger": "wgtlab.trust.ledger:TrustLedger",
    "TrustPolicy": "wgtlab.trust.policy:TrustPolicy",
    # jobs
    "Job": "wgtlab.jobs.job:Job",
    "JobResult": "wgtlab.jobs.result:JobResult",
    "JobPlan": "wgtlab.jobs.plan:JobPlan",
    "input": "wgtlab.jobs.dsl:input",
    "kernel": "wgtlab.jobs.dsl:kernel",
    "limits": "wgtlab.jobs.dsl:limits",
    "retries": "wgtlab.jobs.dsl:retries",
    "current_job": "wgtlab.jobs.dsl:current_job",
    # clusters
    "Cluster": "wgtlab.cluster.base:Cluster",
    "RateLimit": "wgtlab.cluster.ratelimit:RateLimit",
    "LocalCluster": "wgtlab.cluster.local:LocalCluster",
    "DaskCluster": "wgtlab.cluster.dask:DaskCluster",
    "faults": "wgtlab.cluster.faults",
    "delegate_job": "wgtlab.cluster.manager:delegate_job",
    # verified analytics
    "frame": "wgtlab.frame",
    "sql": "wgtlab.frame.sql:sql",
    # receipts
    "Receipt": "wgtlab.receipts:Receipt",
}

__all__ = sorted(
    [
        *_error_names,
        *_LAZY,
        "verify",
        "__version__",
        "load_ipython_extension",
        "unload_ipython_extension",
    ]
)


def _default_cluster() -> LocalCluster:
    from wgtlab.cluster.local import LocalCluster

    return LocalCluster()


_runtime.default_cluster_factory = _default_cluster


def _receipt(result: typing.Any, identity: typing.Any = None) -> typing.Any:
    from wgtlab.receipts import Receipt

    return Receipt.from_result(result, identity)


_runtime.receipt_factory = _receipt


def __getattr__(name: str) -> typing.Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'wgtlab' has no attribute {name!r}")
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    value = getattr(module, attribute) if attribute else module
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


def load_ipython_extension(ipython: typing.Any) -> None:
    """``%load_ext wgtlab``: registers the ``%wgt`` / ``%%wgt`` magics."""
    from wgtlab.notebook.magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: typing.Any) -> None:
    """``%unload_ext wgtlab``: removes the ``%wgt`` magics and closes the cluster they started."""
    from wgtlab.notebook.magics import unload_ipython_extension as _unload

    _unload(ipython)
