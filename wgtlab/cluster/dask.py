"""``DaskCluster``: the cluster interface on dask.distributed, mutual TLS, untrusted workers.

Dask moves tasks and bytes; workers sandbox, sign and answer in plain values; the manager checks
every reply exactly as on a ``LocalCluster``. The client never unpickles what a worker sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import distributed
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from wgtlab import defaults, errors
from wgtlab.cluster.base import RateLimit, Task, WorkerReply
from wgtlab.cluster.certs import CertBundle, init_certs, security_for
from wgtlab.cluster.dask_worker import (
    PLUGIN_NAME,
    ExecutionSpec,
    SandboxPlugin,
    describe_worker,
    execution_spec,
    install_code,
    run_task,
    worker_label,
)
from wgtlab.cluster.faults import Fault
from wgtlab.cluster.identity import fingerprint
from wgtlab.cluster.manager import delegate_job
from wgtlab.errors import ClusterError, ConfigError, WgtError
from wgtlab.sandbox.limits import ResourceLimits
from wgtlab.trust.ledger import TrustLedger
from wgtlab.trust.policy import TrustPolicy

__all__ = ["DaskCluster", "UntrustingClient"]

logger = logging.getLogger(__name__)


class RemoteTaskError(ClusterError):
    """A Dask task failed on a worker; what the worker said about it was not unpickled."""


class UntrustingClient(distributed.Client):
    """A Dask client that never unpickles what workers send.

    Task results come back through msgpack only (``deserializers=["msgpack"]``, gathered through
    the scheduler, never straight from workers). Stock Dask also unpickles, on the client, the
    result type a worker reports, the exception of a failed task, and "print"/"warn" events that
    workers emit; here those are dropped or replaced by a plain error, and the scheduler stream is
    read without deserializing pickled sub-frames.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["deserializers"] = ["msgpack"]
        kwargs["direct_to_workers"] = False
        super().__init__(*args, **kwargs)

    async def _ensure_connected(self, timeout: float | None = None) -> None:
        await super()._ensure_connected(timeout=timeout)
        comm = getattr(self.scheduler_comm, "comm", None)
        if comm is not None:
            comm.deserialize = False  # pickled sub-frames stay bytes (Serialized), unread

    def _handle_key_in_memory(self, key: Any = None, type: Any = None, workers: Any = None) -> None:
        super()._handle_key_in_memory(key=key, type=None, workers=workers)

    def _handle_task_erred(self, key: Any = None, exception: Any = None, traceback: Any = None):
        state = self.futures.get(key)
        if state is not None:
            state.set_error(RemoteTaskError(f"task {key!r} failed on its worker"), None)

    async def _handle_event(self, topic: str, event: Any) -> None:
        if topic in ("print", "warn"):  # stock handlers unpickle these payloads
            return
        await super()._handle_event(topic, event)


@dataclass
class _Member:
    """One Dask worker with the sandbox plugin, as learnt when it registered."""

    label: str
    address: str
    pid: int
    nthreads: int
    public_key: Ed25519PublicKey
    fault: str | None = None
    gone: bool = False
    installs: dict[str, Any] = field(default_factory=dict)  # code digest -> install future
    running: dict[str, asyncio.Task[Any]] = field(default_factory=dict)  # key -> waiter

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


def _security(security: Any) -> Any:
    if security is None or isinstance(security, distributed.Security):
        return security
    if isinstance(security, CertBundle):
        return security_for(security)
    if isinstance(security, (str, Path)):
        return security_for(CertBundle.load(security, "client"))
    raise ConfigError(
        "security must be a distributed.Security, a wgtlab CertBundle, or the path of a client "
        f"certificate bundle (made by `wgtlab certs init`), got {type(security).__name__}"
    )


class DaskCluster:
    """Sandboxed workers on a Dask cluster; a drop-in for ``LocalCluster``.

    ``address_or_client``: the scheduler's address (``tls://host:8786``) or a
    ``distributed.Client`` (its address and security are reused; results still come back
    through this cluster's own untrusting client). ``security``: the client's certificates: a
    ``distributed.Security``, or the path of the ``client`` bundle from ``wgtlab certs init``.
    Workers need the sandbox plugin (``wgtlab worker`` starts them with it); others get no work.
    ``ledger``, ``policy``, ``rate_limit`` and ``seed`` are as for ``LocalCluster``.
    """

    def __init__(
        self,
        address_or_client: str | distributed.Client,
        security: Any = None,
        *,
        ledger: TrustLedger | str | Path | None = None,
        policy: TrustPolicy | None = None,
        rate_limit: RateLimit | None = None,
        seed: int | None = 0,
        timeout: float = defaults.DASK_CONNECT_TIMEOUT_S,
    ) -> None:
        if isinstance(address_or_client, distributed.Client):
            address = address_or_client.scheduler.address
            security = security if security is not None else address_or_client.security
        elif isinstance(address_or_client, str):
            address = address_or_client
        else:
            raise ConfigError(
                "DaskCluster needs a scheduler address (tls://host:port) or a distributed.Client,"
                f" got {type(address_or_client).__name__}"
            )
        security = _security(security)
        self.security = security
        if address.startswith("tls://") and (
            security is None or security.get_tls_config_for_role("client").get("cert") is None
        ):
            raise ConfigError(
                f"{address} needs a client certificate: DaskCluster(address, security="
                "'DIR/client') with the bundle `wgtlab certs init DIR` wrote"
            )
        if policy is not None:
            if ledger is not None and ledger is not policy.ledger:
                raise ConfigError("give a ledger or a policy (which has its own ledger), not both")
            self.policy, self.ledger = policy, policy.ledger
        else:
            if isinstance(ledger, TrustLedger):
                self.ledger = ledger
            else:
                self.ledger = TrustLedger(":memory:" if ledger is None else ledger)
            self.policy = TrustPolicy(self.ledger, seed=seed)
        # A few tasks queued per worker hide the round trip through the scheduler.
        self.rate_limit = rate_limit or RateLimit(max_in_flight=defaults.DASK_MAX_IN_FLIGHT)
        self.address = address
        self.faults: dict[str, Fault] = {}
        self.dask_cluster: Any = None  # the LocalCluster that local() started, if any
        self._closers: list[Callable[[], Any]] = []  # what close() shuts down, last first
        self._members: dict[str, _Member] = {}
        self._bare: list[str] = []  # addresses of workers without the plugin
        self._specs: dict[int, tuple[Any, ExecutionSpec]] = {}
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.client = UntrustingClient(
                address, security=security, timeout=timeout, set_as_default=False
            )
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(
                f"could not connect to the Dask scheduler at {address} within {timeout:.0f} s "
                f"({type(exc).__name__}: {exc}); check the address, that the scheduler runs, and "
                "that this client's certificate is signed by the cluster's CA"
            ) from None
        self._closers.append(self.client.close)
        self.client.subscribe_topic("all", self._on_scheduler_event)

    # --- a local cluster for tries and tests ------------------------------------------------------

    @classmethod
    def local(
        cls,
        n_workers: int = defaults.DASK_LOCAL_WORKERS,
        tls: bool = True,
        *,
        faults: Mapping[int | str, Fault] | None = None,
        threads_per_worker: int = 1,
        identity_dir: str | Path | None = None,
        dashboard: bool | None = None,
        **options: Any,
    ) -> DaskCluster:
        """A Dask ``LocalCluster`` of ``n_workers`` worker processes on loopback, with mutual TLS
        under a fresh cluster CA (``tls=True``), each worker running the sandbox plugin.

        Workers are named ``dask-0`` ...; ``faults={0: wgt.faults.Liar()}`` (index or name) makes
        that worker misbehave. ``dashboard``: serve Dask's dashboard (default: if bokeh is
        installed). Other options go to ``DaskCluster`` (ledger, policy, rate_limit, seed).
        """
        if (
            isinstance(n_workers, bool)
            or not isinstance(n_workers, int)
            or not 1 <= n_workers <= 64
        ):
            raise ConfigError(f"n_workers must be an int in 1..64, got {n_workers!r}")
        labels = [worker_label(i) for i in range(n_workers)]
        named: dict[str, Fault] = {}
        for key, fault in (faults or {}).items():
            label = worker_label(key) if isinstance(key, int) else key
            if label not in labels:
                raise ConfigError(f"faults name unknown worker {key!r}; workers are {labels}")
            if not isinstance(fault, Fault):
                raise ConfigError(f"faults[{key!r}] must be a wgt.faults fault, got {fault!r}")
            named[label] = fault
        if dashboard is None:
            try:
                import bokeh  # noqa: F401
            except ImportError:
                dashboard = False
            else:
                dashboard = True
        certs_dir = Path(tempfile.mkdtemp(prefix="wgtlab-dask-certs-"))
        dask_cluster = None
        try:
            security = None
            if tls:
                bundles = init_certs(certs_dir / "certs", workers=1)
                security = security_for(
                    bundles["scheduler"], bundles["worker-0"], bundles["client"]
                )
            dask_cluster = distributed.LocalCluster(
                n_workers=n_workers,
                threads_per_worker=threads_per_worker,
                processes=True,
                host="127.0.0.1",
                protocol="tls://" if tls else "tcp://",
                scheduler_port=0,
                # Dask's HTTP server runs either way: never on a fixed port (8787 may be taken)
                dashboard_address="127.0.0.1:0",
                scheduler_kwargs={"dashboard": bool(dashboard)},
                worker_dashboard_address=None,
                security=security,
                silence_logs=logging.ERROR,
            )
            cluster = cls(dask_cluster.scheduler_address, security, **options)
            cluster.security = security
        except BaseException:
            if dask_cluster is not None:
                dask_cluster.close()
            shutil.rmtree(certs_dir, ignore_errors=True)
            raise
        cluster._closers[:0] = [
            lambda: shutil.rmtree(certs_dir, ignore_errors=True),
            dask_cluster.close,
        ]
        cluster.dask_cluster = dask_cluster
        cluster.faults = named
        try:
            # Registered through the scheduler, so workers the nanny restarts get it too.
            cluster.client.register_plugin(
                SandboxPlugin(identity_dir=identity_dir, faults=named), name=PLUGIN_NAME
            )
            cluster.client.wait_for_workers(n_workers, timeout=defaults.DASK_CONNECT_TIMEOUT_S)
            cluster._refresh()
        except BaseException:
            cluster.close()
            raise
        return cluster

    # --- the cluster interface -------------------------------------------------------------------

    def worker_names(self) -> list[str]:
        self._refresh()
        return [label for label, m in self._members.items() if not m.gone]

    def identities(self) -> dict[str, Ed25519PublicKey]:
        if not self._members:
            self._refresh()
        return {label: m.public_key for label, m in self._members.items() if not m.gone}

    def fingerprint(self, worker: str) -> str:
        return self._members[worker].fingerprint

    def submit(self, worker: str, task: Task) -> Future[WorkerReply]:
        if self._closed:
            raise ClusterError("this DaskCluster is closed; create a new one")
        member = self._members.get(worker)
        if member is None or member.gone:
            raise ClusterError(f"worker {worker} has left the Dask cluster")
        spec = self._spec(task.kernel)
        installed = self._install_future(member, spec)
        header = {
            "job_id": task.job_id,
            "task_id": task.task_id,
            "chunk": task.chunk,
            "replica": task.replica,
            "digest": spec.digest,
            "limits": task.limits.to_dict(),
        }
        key = f"wgt-task-{task.job_id}-{task.task_id}"
        dask_future = self.client.submit(
            run_task,
            header,
            task.payload,
            installed,
            key=key,
            workers=[member.address],
            allow_other_workers=False,
            pure=False,
            retries=0,
        )
        return asyncio.run_coroutine_threadsafe(
            self._reply(member, key, dask_future, task), self.client.loop.asyncio_loop
        )

    def task_deadline_seconds(self, limits: ResourceLimits) -> float:
        # A task may wait behind the others queued on its worker, and the first one for a kernel
        # behind compiling it; past this the worker counts as stalled.
        threads = min((m.nthreads for m in self._members.values()), default=1)
        queued = math.ceil(self.rate_limit.max_in_flight / max(1, threads))
        one = limits.max_execution_time_ms / 1000.0 * 1.5 + 1.0
        return one * queued + defaults.DASK_TASK_SLACK_S

    def run(self, job: Any) -> Any:
        return delegate_job(job, self)

    # --- code shipped once per worker, by digest -------------------------------------------------

    def _spec(self, kernel: Any) -> ExecutionSpec:
        cached = self._specs.get(id(kernel))
        if cached is not None and cached[0] is kernel:
            return cached[1]
        spec = execution_spec(kernel)
        if len(self._specs) > 16:
            self._specs.clear()
        self._specs[id(kernel)] = (kernel, spec)
        return spec

    def _install_future(self, member: _Member, spec: ExecutionSpec) -> Any:
        with self._lock:
            future = member.installs.get(spec.digest)
            if future is None:
                future = self.client.submit(
                    install_code,
                    spec.header(),
                    spec.code,
                    key=f"wgt-install-{spec.digest[:16]}-{member.address}",
                    workers=[member.address],
                    allow_other_workers=False,
                    pure=False,
                    retries=0,
                )
                member.installs[spec.digest] = future
        return future

    def install(self, kernel: Any, workers: list[str] | None = None) -> None:
        """Ship ``kernel``'s code (or an ``ExecutionSpec``) to ``workers`` (default: all) now,
        and wait: a worker refuses code whose bytes do not match their digest (InvalidModule).
        Jobs do this by themselves; calling it first takes compiling out of the first tasks."""
        spec = kernel if isinstance(kernel, ExecutionSpec) else self._spec(kernel)
        names = self.worker_names() if workers is None else workers
        for name in names:
            member = self._members.get(name)
            if member is None or member.gone:
                raise ClusterError(f"no worker {name} in this Dask cluster")
            future = self._install_future(member, spec)
            try:
                answer = future.result(timeout=defaults.DASK_CONNECT_TIMEOUT_S * 3)
            except Exception as exc:
                with self._lock:
                    member.installs.pop(spec.digest, None)
                raise ClusterError(f"installing {spec.name} on {name} failed: {exc}") from None
            if not (isinstance(answer, Mapping) and answer.get("ok") is True):
                with self._lock:
                    member.installs.pop(spec.digest, None)  # a later job tries again
                raise _typed_refusal(answer, name)

    # --- replies ---------------------------------------------------------------------------------

    async def _reply(self, member: _Member, key: str, dask_future: Any, task: Task) -> WorkerReply:
        """On the client's event loop: wait for the task, turn its plain values into a reply."""
        if member.gone:
            dask_future.release()
            raise ClusterError(f"worker {member.label} left the Dask cluster")
        member.running[key] = asyncio.current_task()  # type: ignore[assignment]
        try:
            wire = await dask_future
        except asyncio.CancelledError:
            raise ClusterError(
                f"worker {member.label} left the Dask cluster with task {task.task_id} on it"
            ) from None
        except ClusterError:
            raise
        except Exception as exc:
            # e.g. a result that is not msgpack: refused by the client, never unpickled
            raise RemoteTaskError(
                f"task {task.task_id} on {member.label} failed: {type(exc).__name__}: "
                f"{str(exc)[:300]}"
            ) from None
        finally:
            member.running.pop(key, None)
            dask_future.release()
        return reply_from_wire(wire, member.label, task)

    def _on_scheduler_event(self, event: Any) -> None:
        """Scheduler events, on the client's loop: a worker that leaves fails its tasks now
        (pinned tasks would otherwise wait for it forever), so the manager reruns them."""
        try:
            _, message = event
            if not (isinstance(message, dict) and message.get("action") == "remove-worker"):
                return
            address = message.get("worker")
        except (TypeError, ValueError):
            return
        for member in list(self._members.values()):
            if member.address == address and not member.gone:
                member.gone = True
                for waiter in list(member.running.values()):
                    waiter.cancel()
                logger.info("wgtlab: worker %s (%s) left the cluster", member.label, address)

    # --- membership ------------------------------------------------------------------------------

    def _refresh(self) -> None:
        """Learn which workers are up, and the key of each one not seen before."""
        if self._closed:
            raise ClusterError("this DaskCluster is closed; create a new one")
        try:
            info = self.client.scheduler_info(n_workers=-1)["workers"]
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"the Dask scheduler at {self.address} did not answer: {exc}"
            ) from None
        known = {m.address: m for m in self._members.values() if not m.gone}
        fresh = [address for address in info if address not in known]
        described = {address: self._describe(address) for address in fresh}
        members: dict[str, _Member] = {}
        bare = []
        for address, worker in info.items():
            member = known.get(address)
            if member is None:
                member = _member(address, worker, described.get(address))
            if member is None:
                bare.append(address)
                continue
            members[member.label] = member
        with self._lock:
            self._members = members
            self._bare = bare

    def _describe(self, address: str) -> Any:
        future = self.client.submit(
            describe_worker,
            key=f"wgt-describe-{address}-{id(self)}-{threading.get_ident()}",
            workers=[address],
            allow_other_workers=False,
            pure=False,
        )
        try:
            return future.result(timeout=defaults.DASK_CONNECT_TIMEOUT_S)
        except Exception as exc:  # gone meanwhile, or answered with something not plain
            logger.warning("wgtlab: worker %s did not describe itself: %s", address, exc)
            return None
        finally:
            future.release()

    def worker_pids(self) -> dict[str, int]:
        """Each worker's process id, as it reported it (for tests that kill workers)."""
        return {label: m.pid for label, m in self._members.items() if not m.gone}

    def worker_addresses(self) -> dict[str, str]:
        return {label: m.address for label, m in self._members.items() if not m.gone}

    # --- life cycle and display ------------------------------------------------------------------

    @property
    def dashboard_link(self) -> str | None:
        """The Dask dashboard's address, or None if the scheduler serves none (no bokeh)."""
        try:
            info = self.client.scheduler_info(n_workers=0)
            port = info.get("services", {}).get("dashboard")
            if port is None:
                return None
            return self.client.dashboard_link
        except Exception:
            return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for member in self._members.values():
            member.gone = True
        with contextlib.suppress(Exception):  # the client may be closed already
            self.client.unsubscribe_topic("all")
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception as exc:  # closing must go on through the rest
                logger.debug("wgtlab: closing %r: %s", closer, exc)

    def __enter__(self) -> DaskCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        workers = sum(not m.gone for m in self._members.values())
        faulty = f", faults={sorted(self.faults)}" if self.faults else ""
        return f"DaskCluster({self.address!r}, workers={workers}{faulty})"

    def _repr_html_(self) -> str:
        import html

        from wgtlab.cluster.display import cluster_html

        link = self.dashboard_link
        dashboard = (
            f"<a href='{html.escape(link)}' target='_blank'>Dask dashboard</a>"
            if link
            else "no dashboard (install bokeh)"
        )
        workers = sum(not m.gone for m in self._members.values())
        bare = f", {len(self._bare)} without the sandbox plugin (no work)" if self._bare else ""
        detail = (
            f"{workers} sandboxed workers at <code>{html.escape(self.address)}</code>{bare}, "
            f"{dashboard}"
        )
        return cluster_html(self, "DaskCluster", detail)


def _member(address: str, worker: Mapping[str, Any], described: Any) -> _Member | None:
    """A member from the scheduler's record and the worker's own description (plain values,
    checked: the worker is not trusted to say anything but its key)."""
    if not isinstance(described, Mapping):
        return None
    raw = described.get("public_key")
    if not isinstance(raw, bytes) or len(raw) != 32:
        logger.warning("wgtlab: worker %s sent no valid Ed25519 public key", address)
        return None
    pid = described.get("pid")
    fault = described.get("fault")
    return _Member(
        label=worker_label(worker.get("name")),  # the scheduler's name for it, not the worker's
        address=address,
        pid=pid if isinstance(pid, int) else -1,
        nthreads=int(worker.get("nthreads") or 1),
        public_key=Ed25519PublicKey.from_public_bytes(raw),
        fault=fault if isinstance(fault, str) else None,
    )


def _typed_refusal(answer: Any, worker: str) -> WgtError:
    name = answer.get("error") if isinstance(answer, Mapping) else None
    message = answer.get("message") if isinstance(answer, Mapping) else None
    cls = getattr(errors, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, WgtError)):
        cls = ClusterError
    return cls(f"worker {worker} refused the code: {str(message)[:1000]}")


_BYTES = ("output", "outcome_digest", "signature", "stdout", "stderr")
_INTS = ("task_id", "chunk", "fuel_used", "memory_bytes")


def reply_from_wire(wire: Any, worker: str, task: Task) -> WorkerReply:
    """Plain values from a worker -> a WorkerReply, every field type-checked (the manager then
    checks what they say: assignment, digest, signature)."""
    if not isinstance(wire, Mapping):
        raise RemoteTaskError(f"worker {worker} answered with a {type(wire).__name__}, not a reply")
    for problem in ("crashed", "refused"):
        if problem in wire:
            raise RemoteTaskError(f"worker {worker} {problem}: {str(wire[problem])[:500]}")

    def bad(name: str, expected: str) -> RemoteTaskError:
        return RemoteTaskError(
            f"malformed reply from worker {worker}: {name} is a {type(wire.get(name)).__name__}, "
            f"expected {expected}"
        )

    for name in _BYTES:
        if not isinstance(wire.get(name), bytes):
            raise bad(name, "bytes")
    for name in _INTS:
        value = wire.get(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(name, "an int")
    if not isinstance(wire.get("job_id"), str) or not isinstance(wire.get("output_sha256"), str):
        raise bad("job_id" if not isinstance(wire.get("job_id"), str) else "output_sha256", "str")
    wall_ms = wire.get("wall_ms")
    if isinstance(wall_ms, bool) or not isinstance(wall_ms, (int, float)):
        raise bad("wall_ms", "a number")
    for name in ("error_type", "error_message"):
        if wire.get(name) is not None and not isinstance(wire.get(name), str):
            raise bad(name, "a str or None")
    return WorkerReply(
        job_id=wire["job_id"],
        task_id=wire["task_id"],
        chunk=wire["chunk"],
        worker=worker,
        output=wire["output"],
        output_sha256=wire["output_sha256"],
        outcome_digest=wire["outcome_digest"],
        signature=wire["signature"],
        fuel_used=wire["fuel_used"],
        wall_ms=float(wall_ms),
        memory_bytes=wire["memory_bytes"],
        error_type=wire.get("error_type"),
        error_message=wire.get("error_message"),
        stdout=wire["stdout"],
        stderr=wire["stderr"],
    )
