"""``DaskCluster``: the cluster interface on dask.distributed, mutual TLS, untrusted workers.

Dask moves tasks and bytes; workers sandbox, sign and answer in plain values; the manager checks
every reply exactly as on a ``LocalCluster``. The client never unpickles what a worker sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import html
import importlib.util
import logging
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import distributed
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from distributed.core import send_recv

from wgtlab import defaults
from wgtlab.cluster.base import Cluster
from wgtlab.cluster.certs import CertBundle, init_local_certs, security_for
from wgtlab.cluster.dask_local import LoopbackProcesses
from wgtlab.cluster.dask_worker import (
    PLUGIN_NAME,
    SandboxPlugin,
    describe_worker,
    install_code,
    run_wire_task,
    worker_label,
)
from wgtlab.cluster.faults import FaultMap
from wgtlab.cluster.identity import fingerprint
from wgtlab.cluster.ratelimit import RateLimit
from wgtlab.cluster.task import Task, WorkerReply
from wgtlab.cluster.wire import RemoteTaskError, refusal_from_wire, reply_from_wire, task_to_wire
from wgtlab.errors import ClusterError, ConfigError
from wgtlab.sandbox.kernels.base import ExecutionSpec, Kernel
from wgtlab.trust.ledger import TrustLedger
from wgtlab.trust.policy import TrustPolicy

__all__ = ["DaskCluster", "RemoteTaskError", "UntrustingClient"]

logger = logging.getLogger(__name__)
_BUSY_RETRIES = 8  # a worker answering "busy" is asked again after 10 ms, 20 ms, ... 1.3 s


class UntrustingClient(distributed.Client):
    """A Dask client that never unpickles what workers send.

    Task results come back through msgpack only (``deserializers=["msgpack"]``; the cluster
    fetches them from each worker with the same restriction). Stock Dask also unpickles, on the
    client, the result type a worker reports, the exception of a failed task, and "print"/"warn"
    events that workers emit; here those are dropped or replaced by a plain error, and the
    scheduler stream is read without deserializing pickled sub-frames.
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

    def _handle_task_erred(
        self, key: Any = None, exception: Any = None, traceback: Any = None
    ) -> None:
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
    installed: set[str] = field(default_factory=set)  # code digests it has
    running: dict[str, asyncio.Task[Any]] = field(default_factory=dict)  # key -> its waiter
    to_fetch: dict[str, asyncio.Future[Any]] = field(default_factory=dict)  # finished, unfetched
    fetching: asyncio.Future[Any] | None = None  # the batch request under way

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


@dataclass(frozen=True)
class _Outgoing:
    """A task submitted by the manager, waiting for the next flush to Dask."""

    member: _Member
    key: str
    header: dict[str, Any]
    task: Task
    reply: Future[WorkerReply]


def _settle(reply: Future[WorkerReply], waiter: asyncio.Future[WorkerReply]) -> None:
    """Hand an asyncio outcome to the manager's concurrent future."""
    if waiter.cancelled():
        reply.set_exception(ClusterError("the task's waiter was cancelled"))
    elif waiter.exception() is not None:
        reply.set_exception(waiter.exception())
    else:
        reply.set_result(waiter.result())


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


class DaskCluster(Cluster):
    """Sandboxed workers on a Dask cluster; a drop-in for ``LocalCluster``.

    ``address_or_client``: the scheduler's address (``tls://host:8786``) or a
    ``distributed.Client`` (its address and security are reused; results still come back
    through this cluster's own untrusting client). ``security``: the client's certificates: a
    ``distributed.Security``, or the path of the ``client`` bundle from ``wgtlab certs init``.
    Workers need the sandbox plugin (``wgtlab worker`` starts them with it); others get no work.
    ``ledger``, ``policy``, ``rate_limit`` and ``seed`` are as for ``LocalCluster``.
    """

    # A task may wait behind the others queued on its worker, and the first one for a kernel
    # behind compiling it, plus the round trip through the scheduler.
    deadline_slack_s = defaults.DASK_TASK_SLACK_S

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
        address: str
        if isinstance(address_or_client, distributed.Client):
            if address_or_client.scheduler is None:
                raise ConfigError("the distributed.Client given is not connected to a scheduler")
            address = str(address_or_client.scheduler.address)
            security = security if security is not None else address_or_client.security
        elif isinstance(address_or_client, str):
            address = address_or_client
        elif isinstance(address_or_client, distributed.deploy.Cluster):
            address = address_or_client.scheduler_address
        else:
            raise ConfigError(
                "DaskCluster needs a scheduler address (tls://host:port), a Dask cluster object "
                f"or a distributed.Client, got {type(address_or_client).__name__}"
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
        super().__init__(
            ledger=ledger,
            policy=policy,
            # A few tasks queued per worker hide the round trip through the scheduler.
            rate_limit=rate_limit or RateLimit(max_in_flight=defaults.DASK_MAX_IN_FLIGHT),
            seed=seed,
        )
        self.address = address
        self.processes: LoopbackProcesses | None = None  # what local() started, if anything
        self._closers: list[Callable[[], Any]] = []  # what close() shuts down, last first
        self._members: dict[str, _Member] = {}
        self._bare: list[str] = []  # addresses of workers without the plugin
        self._specs: dict[int, tuple[Kernel, ExecutionSpec]] = {}
        self._outbox: list[_Outgoing] = []  # submitted, not yet sent (see _flush)
        self._flush_pending = False
        self._lock = threading.Lock()
        # A Dask cluster object lends the client its event loop: one loop thread, not two.
        target = (
            address
            if isinstance(address_or_client, (str, distributed.Client))
            else (address_or_client)
        )
        try:
            self.client = UntrustingClient(
                target, security=security, timeout=timeout, set_as_default=False
            )
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(
                f"could not connect to the Dask scheduler at {address} within {timeout:.0f} s "
                f"({type(exc).__name__}: {exc}); check the address, that the scheduler runs, and "
                "that this client's certificate is signed by the cluster's CA"
            ) from None
        self._closers.append(self.client.close)

    # --- a local cluster for tries and tests ------------------------------------------------------

    @classmethod
    def local(
        cls,
        n_workers: int = defaults.DASK_LOCAL_WORKERS,
        tls: bool = True,
        *,
        faults: FaultMap | None = None,
        threads_per_worker: int = 1,
        identity_dir: str | Path | None = None,
        dashboard: bool | None = None,
        **options: Any,
    ) -> DaskCluster:
        """A Dask scheduler and ``n_workers`` sandboxed worker processes on loopback, started
        like ``wgtlab scheduler`` / ``wgtlab worker`` on several machines, with mutual TLS under
        a fresh cluster CA (``tls=True``). The scheduler runs in its own process, not this one.
        The processes end with this one however it ends (``close()`` or not, even SIGKILL), and
        their temporary directory goes with them; the CA's private key is never written.

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
        named = cls.named_faults(faults, [worker_label(i) for i in range(n_workers)])
        if dashboard is None:
            dashboard = importlib.util.find_spec("bokeh") is not None
        workdir = Path(tempfile.mkdtemp(prefix="wgtlab-dask-"))
        processes = LoopbackProcesses(workdir)
        try:
            # The CA's private key is never written: nobody can issue more of these.
            bundles = init_local_certs(workdir / "certs", workers=n_workers) if tls else None
            address = processes.start(
                n_workers,
                bundles,
                threads_per_worker=threads_per_worker,
                identity_dir=Path(identity_dir or workdir / "identities"),
                dashboard=bool(dashboard),
            )
            cluster = cls(address, bundles["client"] if bundles else None, **options)
        except BaseException:
            processes.stop()
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        cluster._closers[:0] = [
            lambda: shutil.rmtree(workdir, ignore_errors=True),
            processes.stop,
        ]
        cluster.processes = processes
        cluster.faults = named
        try:
            cluster.client.wait_for_workers(n_workers, timeout=defaults.DASK_CONNECT_TIMEOUT_S * 2)
            if named:
                # Replaces the plugin the workers started with (same identity directory, so the
                # same keys) by one that knows its faults.
                cluster.client.register_plugin(
                    SandboxPlugin(
                        identity_dir=identity_dir or workdir / "identities", faults=named
                    ),
                    name=PLUGIN_NAME,
                )
            cluster._refresh()
        except BaseException as exc:
            tails = "\n".join(
                f"--- {name} ---\n{processes.log_tail(name)}" for name in processes.processes
            )
            cluster.close()
            if isinstance(exc, Exception):
                raise ClusterError(
                    f"the local Dask cluster did not come up: {exc}\n{tails}"
                ) from None
            raise
        return cluster

    # --- the cluster interface -------------------------------------------------------------------

    def worker_names(self) -> list[str]:
        self._refresh()
        return sorted((n for n, m in self._members.items() if not m.gone), key=_natural)

    def identities(self) -> dict[str, Ed25519PublicKey]:
        if not self._members:
            self._refresh()
        return {label: m.public_key for label, m in self._members.items() if not m.gone}

    def has_left(self, worker: str) -> bool:
        """Whether ``worker`` has left the cluster (its lost tasks are re-run elsewhere)."""
        member = self._members.get(worker)
        return member is None or member.gone

    def submit(self, worker: str, task: Task) -> Future[WorkerReply]:
        if self._closed:
            raise ClusterError("this DaskCluster is closed; create a new one")
        member = self._members.get(worker)
        if member is None or member.gone:
            raise ClusterError(f"worker {worker} has left the Dask cluster")
        spec = self._spec(task.kernel)
        self._ensure_installed(member, spec)
        header = task_to_wire(task, spec.digest)
        reply: Future[WorkerReply] = Future()
        outgoing = _Outgoing(member, f"wgt-task-{task.job_id}-{task.task_id}", header, task, reply)
        loop = self.client.loop
        if loop is None:
            raise ClusterError("this DaskCluster's client is closed; create a new DaskCluster")
        with self._lock:
            self._outbox.append(outgoing)
            wake = not self._flush_pending
            self._flush_pending = True
        if wake:
            loop.add_callback(self._flush)  # thread-safe
        return reply

    def _flush(self) -> None:
        """On the client's loop: send what was submitted since the last flush, one Dask graph
        per worker (the scheduler's cost is per graph, not per task)."""
        with self._lock:
            outbox, self._outbox = self._outbox, []
            self._flush_pending = False
        groups: dict[str, list[_Outgoing]] = {}
        for outgoing in outbox:
            groups.setdefault(outgoing.member.address, []).append(outgoing)
        for group in groups.values():
            member = group[0].member
            try:
                if member.gone:
                    raise ClusterError(f"worker {member.label} left the Dask cluster")
                futures = self.client.map(
                    run_wire_task,
                    [o.header for o in group],
                    [o.task.payload for o in group],
                    key=[o.key for o in group],
                    workers=[member.address],
                    allow_other_workers=False,
                    pure=False,
                    retries=0,
                )
            except Exception as exc:
                for outgoing in group:
                    outgoing.reply.set_exception(exc)
                continue
            for outgoing, dask_future in zip(group, futures, strict=True):
                waiter = asyncio.ensure_future(
                    self._reply(member, outgoing.key, dask_future, outgoing.task)
                )
                waiter.add_done_callback(functools.partial(_settle, outgoing.reply))

    def slots_per_worker(self) -> int:
        return min((m.nthreads for m in self._members.values()), default=1)

    # --- code shipped once per worker, by digest -------------------------------------------------

    def _spec(self, kernel: Kernel) -> ExecutionSpec:
        cached = self._specs.get(id(kernel))
        if cached is not None and cached[0] is kernel:
            return cached[1]
        spec = kernel.execution_spec()
        if len(self._specs) > 16:
            self._specs.clear()
        self._specs[id(kernel)] = (kernel, spec)
        return spec

    def _ensure_installed(self, member: _Member, spec: ExecutionSpec) -> None:
        """Ship ``spec`` to ``member`` unless it has it: once per worker and digest, waited for
        (compiling happens there, before the first task, not inside its deadline)."""
        if spec.digest in member.installed:
            return
        future = self.client.submit(
            install_code,
            spec.header(),
            spec.code,
            key=f"wgt-install-{spec.digest[:16]}-{member.address}-{time.monotonic_ns()}",
            workers=[member.address],
            allow_other_workers=False,
            pure=False,
            retries=0,
        )
        try:
            answer = future.result(timeout=defaults.DASK_INSTALL_TIMEOUT_S)
        except Exception as exc:  # gone meanwhile, or an answer that is not plain values
            raise ClusterError(
                f"installing {spec.name} on {member.label} failed: {type(exc).__name__}: "
                f"{str(exc)[:300]}"
            ) from None
        finally:
            future.release()
        if not (isinstance(answer, Mapping) and answer.get("ok") is True):
            raise refusal_from_wire(answer, member.label)
        member.installed.add(spec.digest)

    def install(self, kernel: Kernel | ExecutionSpec, workers: list[str] | None = None) -> None:
        """Ship ``kernel``'s code (or an ``ExecutionSpec``) to ``workers`` (default: all) now.
        A worker refuses code whose bytes do not match their digest (InvalidModule). Jobs do
        this by themselves, before each worker's first task."""
        spec = kernel if isinstance(kernel, ExecutionSpec) else self._spec(kernel)
        names = self.worker_names() if workers is None else workers
        for name in names:
            member = self._members.get(name)
            if member is None or member.gone:
                raise ClusterError(f"no worker {name} in this Dask cluster")
            self._ensure_installed(member, spec)

    # --- replies ---------------------------------------------------------------------------------

    async def _reply(self, member: _Member, key: str, dask_future: Any, task: Task) -> WorkerReply:
        """On the client's event loop: wait for the task, fetch its plain values, make a reply."""
        if member.gone:
            dask_future.release()
            raise ClusterError(f"worker {member.label} left the Dask cluster")
        member.running[key] = asyncio.current_task()  # type: ignore[assignment]
        try:
            await dask_future._state.wait()  # done, without fetching: results come in batches
            if dask_future.status != "finished":
                raise RemoteTaskError(
                    f"task {task.task_id} on {member.label} ended {dask_future.status}"
                )
            wire = await self._fetch(member, key)
        except asyncio.CancelledError:
            raise ClusterError(
                f"worker {member.label} left the Dask cluster with task {task.task_id} on it"
            ) from None
        finally:
            member.running.pop(key, None)
            dask_future.release()
        return reply_from_wire(wire, member.label, task)

    async def _fetch(self, member: _Member, key: str) -> Any:
        """One task's result, fetched with the others of the same worker that finished
        meanwhile: one request per batch, and per worker, so a worker whose reply is refused
        (not msgpack) spoils only its own tasks."""
        waiter = asyncio.get_running_loop().create_future()
        member.to_fetch[key] = waiter
        if member.fetching is None:
            member.fetching = asyncio.ensure_future(self._fetch_batches(member))
        return await waiter

    async def _fetch_batches(self, member: _Member) -> None:
        try:
            while member.to_fetch:
                batch, member.to_fetch = member.to_fetch, {}
                try:
                    data = await self._get_data(member, list(batch))
                except Exception as exc:
                    error = (
                        exc
                        if isinstance(exc, ClusterError)
                        else RemoteTaskError(
                            f"results from {member.label} refused: {type(exc).__name__}: "
                            f"{str(exc)[:300]}"
                        )
                    )
                    for waiter in batch.values():
                        if not waiter.done():
                            waiter.set_exception(error)
                    continue
                for key, waiter in batch.items():
                    if waiter.done():
                        continue
                    if key in data:
                        waiter.set_result(data[key])
                    else:
                        waiter.set_exception(ClusterError(f"no result for {key}"))
        finally:
            member.fetching = None

    async def _get_data(self, member: _Member, keys: list[str]) -> dict[str, Any]:
        """The results of ``keys``, fetched straight from the worker that holds them (the
        scheduler relaying them cost it a third of its time) and read as msgpack only: a
        pickled reply is refused before anything in it runs."""
        for attempt in range(_BUSY_RETRIES + 1):
            try:
                response = await self._request_data(member.address, keys)
            except OSError as exc:  # the connection failed or closed: the worker is gone
                raise ClusterError(
                    f"worker {member.label} left the Dask cluster with {len(keys)} finished "
                    f"results not yet fetched ({type(exc).__name__})"
                ) from None
            status = response.get("status") if isinstance(response, dict) else None
            if status == "busy":  # serving other peers at its limit: ask again shortly
                await asyncio.sleep(0.01 * 2**attempt)
                continue
            data = response.get("data") if status == "OK" else None
            if not isinstance(data, dict):
                raise RemoteTaskError(f"results from {member.label} refused: not a data reply")
            return data
        raise ClusterError(
            f"worker {member.label} stayed busy for {_BUSY_RETRIES} requests for its results"
        )

    async def _request_data(self, address: str, keys: list[str]) -> Any:
        """Dask's get_data exchange with one worker (request, reply, "OK"), the reply read as
        msgpack only. A connection whose reply was refused is dropped, never reused: the worker
        still waits on it for the "OK" that would end the exchange."""
        pool = self.client.rpc
        comm = await pool.connect(address)
        try:
            response = await send_recv(
                comm,
                serializers=["msgpack"],
                deserializers=["msgpack"],
                op="get_data",
                keys=keys,
                who=None,
            )
            if isinstance(response, dict) and response.get("status") == "OK":
                await comm.write("OK")
        except BaseException:
            comm.abort()
            raise
        pool.reuse(address, comm)
        return response

    def _on_worker_event(self, address: str, event: Any) -> None:
        """A worker's scheduler events, on the client's loop: one that leaves fails its tasks
        at once (pinned tasks would otherwise wait for it forever); the manager reruns them."""
        try:
            _, message = event
        except (TypeError, ValueError):
            return
        if not (isinstance(message, dict) and message.get("action") == "remove-worker"):
            return
        if "worker" in message:
            # The scheduler's own remove-worker event on a worker's topic carries no "worker"
            # field; an event a worker logged (a forgery about a peer) is stamped with one.
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
        described = self._describe(fresh)
        members: dict[str, _Member] = {}
        bare = []
        for address, worker in info.items():
            member = known.get(address)
            if member is None:
                member = _member(address, worker, described.get(address))
                if member is None:
                    bare.append(address)
                    continue
                # remove-worker is logged to the worker's own topic (the "all" topic would
                # also bring an event for every gather)
                self.client.subscribe_topic(
                    address, functools.partial(self._on_worker_event, address)
                )
            members[member.label] = member
        with self._lock:
            self._members = members
            self._bare = bare

    def _describe(self, addresses: list[str]) -> dict[str, Any]:
        """Ask each worker (all at once) for its label and public key."""
        futures = {
            address: self.client.submit(
                describe_worker,
                key=f"wgt-describe-{address}-{time.monotonic_ns()}",
                workers=[address],
                allow_other_workers=False,
                pure=False,
            )
            for address in addresses
        }
        deadline = time.monotonic() + defaults.DASK_CONNECT_TIMEOUT_S
        described: dict[str, Any] = {}
        for address, future in futures.items():
            try:
                described[address] = future.result(timeout=max(0.1, deadline - time.monotonic()))
            except Exception as exc:  # gone meanwhile, or answered with something not plain
                logger.warning("wgtlab: worker %s did not describe itself: %s", address, exc)
            finally:
                future.release()
        return described

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

    def _shutdown(self) -> None:
        for member in self._members.values():
            member.gone = True
        for member in self._members.values():
            with contextlib.suppress(Exception):  # the client may be closed already
                self.client.unsubscribe_topic(member.address)
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception as exc:  # closing must go on through the rest
                logger.debug("wgtlab: closing %r: %s", closer, exc)

    def __repr__(self) -> str:
        workers = sum(not m.gone for m in self._members.values())
        faulty = f", faults={sorted(self.faults)}" if self.faults else ""
        return f"DaskCluster({self.address!r}, workers={workers}{faulty})"

    def _card_detail(self) -> str:
        link = self.dashboard_link
        dashboard = (
            f"<a href='{html.escape(link)}' target='_blank'>Dask dashboard</a>"
            if link
            else "no dashboard (install bokeh)"
        )
        workers = sum(not m.gone for m in self._members.values())
        bare = f", {len(self._bare)} without the sandbox plugin (no work)" if self._bare else ""
        return (
            f"{workers} sandboxed workers at <code>{html.escape(self.address)}</code>{bare}, "
            f"{dashboard}"
        )


def _natural(label: str) -> tuple[Any, ...]:
    """``dask-2`` before ``dask-10``."""
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", label))


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
