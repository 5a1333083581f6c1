"""``wgtlab certs``, ``wgtlab scheduler`` and ``wgtlab worker``: a Dask cluster with mutual TLS.

``certs init DIR`` makes the cluster CA and a bundle per member; the scheduler and each worker
run with their own bundle; only holders of a certificate from that CA can connect.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from wgtlab import defaults


def register(subparsers: argparse._SubParsersAction) -> None:
    certs = subparsers.add_parser(
        "certs",
        help="make the CA and certificates of a Dask cluster with mutual TLS",
        description="Certificates for a DaskCluster: one CA per cluster, one bundle per member.",
    )
    actions = certs.add_subparsers(dest="certs_command", metavar="ACTION")
    init = actions.add_parser(
        "init",
        help="a new cluster CA and bundles for the scheduler, the client and N workers",
        description=(
            "Write DIR/ca (CA certificate and key: keep the key with the administrator), and "
            "DIR/scheduler, DIR/client, DIR/worker-0 .. bundles (ca.pem, cert.pem, key.pem; "
            "keys mode 0600). Copy each bundle to the machine that plays that part. Each "
            "certificate names its role: a worker's only joins the scheduler as a worker."
        ),
    )
    init.add_argument("dir", type=Path, help="a new or empty directory")
    init.add_argument(
        "--workers",
        type=int,
        default=defaults.DASK_CERT_WORKERS,
        help=f"worker bundles to make (default {defaults.DASK_CERT_WORKERS})",
    )
    init.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="NAME_OR_IP",
        help="extra host name or IP for the scheduler and worker certificates "
        "(repeatable; localhost and 127.0.0.1 are always included)",
    )
    init.add_argument(
        "--days",
        type=int,
        default=defaults.CERT_VALID_DAYS,
        help=f"validity of member certificates (default {defaults.CERT_VALID_DAYS})",
    )
    init.set_defaults(handler=certs_init)
    issue = actions.add_parser(
        "issue",
        help="one more bundle from an existing cluster CA",
        description="Issue a bundle DIR/NAME for a new member, signed by the CA in DIR/ca.",
    )
    issue.add_argument("dir", type=Path, help="the directory `wgtlab certs init` wrote")
    issue.add_argument("name", help="bundle name, e.g. worker-7")
    issue.add_argument("--role", choices=("worker", "client", "scheduler"), default="worker")
    issue.add_argument("--host", action="append", default=[], metavar="NAME_OR_IP")
    issue.add_argument("--days", type=int, default=defaults.CERT_VALID_DAYS)
    issue.set_defaults(handler=certs_issue)
    certs.set_defaults(handler=lambda args: (certs.print_help(), 2)[1])

    scheduler = subparsers.add_parser(
        "scheduler",
        help="run a Dask scheduler that only admits holders of the cluster's certificates",
        description="A Dask scheduler on tls://HOST:PORT with mutual TLS.",
    )
    scheduler.add_argument("--certs", type=Path, help="the scheduler bundle (DIR/scheduler)")
    scheduler.add_argument("--insecure-loopback", action="store_true", help=argparse.SUPPRESS)
    scheduler.add_argument("--host", default="0.0.0.0", help="address to listen on")
    scheduler.add_argument("--port", type=int, default=8786, help="port (0: any free port)")
    scheduler.add_argument(
        "--dashboard-address",
        default=None,
        help="serve Dask's dashboard there, e.g. :8787 (needs bokeh)",
    )
    scheduler.add_argument(
        "--scheduler-file",
        type=Path,
        default=None,
        help="write the scheduler's address to this JSON file",
    )
    _owner_option(scheduler)
    scheduler.set_defaults(handler=run_scheduler)

    worker = subparsers.add_parser(
        "worker",
        help="run a sandboxed Dask worker for a DaskCluster",
        description=(
            "A Dask worker with the wgtlab sandbox plugin: it runs kernels in wasmtime, signs "
            "results with its Ed25519 key (kept in --identity-dir), and connects with mutual TLS: "
            "wgtlab worker tls://HOST:PORT --certs DIR/worker-N"
        ),
    )
    # The address positionally, as `dask worker ADDRESS` takes it, or as --scheduler.
    worker.add_argument(
        "address",
        nargs="?",
        metavar="tls://HOST:PORT",
        help="the scheduler's address (or give it as --scheduler)",
    )
    worker.add_argument(
        "--scheduler",
        metavar="tls://HOST:PORT",
        help="the scheduler's address (the same as the positional argument)",
    )
    worker.add_argument("--certs", type=Path, help="this worker's bundle (DIR/worker-N)")
    worker.add_argument("--insecure-loopback", action="store_true", help=argparse.SUPPRESS)
    worker.add_argument(
        "--name", default=None, help="the worker's name (default: the bundle's name, e.g. worker-0)"
    )
    worker.add_argument("--nthreads", type=int, default=1, help="tasks at a time (default 1)")
    worker.add_argument("--host", default=None, help="address to listen on")
    worker.add_argument(
        "--contact-address",
        default=None,
        help="address the scheduler and peers use to reach this worker",
    )
    worker.add_argument(
        "--identity-dir",
        type=Path,
        default=None,
        help="where the worker's signing key lives (default: the wgtlab data "
        "dir, so trust follows the worker across restarts)",
    )
    worker.add_argument("--local-directory", type=Path, default=None, help="scratch space for Dask")
    worker.add_argument(
        "--death-timeout",
        type=float,
        default=defaults.DASK_CONNECT_TIMEOUT_S,
        help="give up if the scheduler cannot be reached for this many seconds",
    )
    _owner_option(worker)
    worker.set_defaults(handler=run_worker)


def _owner_option(parser: argparse.ArgumentParser) -> None:
    # DaskCluster.local: end as soon as the process that started this one (PID) does
    parser.add_argument("--owner", type=int, default=None, metavar="PID", help=argparse.SUPPRESS)


def _tie(args: argparse.Namespace) -> None:
    if args.owner is not None:
        from wgtlab.cluster.dask_local import tie_to_owner

        tie_to_owner(args.owner)


def certs_init(args: argparse.Namespace) -> int:
    from wgtlab.cluster.certs import init_certs

    bundles = init_certs(args.dir, workers=args.workers, hosts=args.host, valid_days=args.days)
    print(f"cluster CA: {args.dir / 'ca'} (keep ca.key with the administrator, not on members)")
    for name, bundle in bundles.items():
        print(f"{bundle.role:<9} {name:<12} {bundle.cert_file.parent}")
    return 0


def certs_issue(args: argparse.Namespace) -> int:
    from wgtlab.cluster.certs import issue_bundle

    bundle = issue_bundle(args.dir, args.name, args.role, hosts=args.host, valid_days=args.days)
    print(f"{bundle.role:<9} {bundle.name:<12} {bundle.cert_file.parent}")
    return 0


def _security(args: argparse.Namespace, role: str) -> Any:
    """The member's ``distributed.Security`` from ``--certs``; None only for the hidden
    ``--insecure-loopback`` (``DaskCluster.local(tls=False)``), which binds to 127.0.0.1."""
    from wgtlab.cluster.certs import CertBundle
    from wgtlab.errors import ConfigError

    if args.certs is not None:
        return CertBundle.load(args.certs, role).security()
    if not args.insecure_loopback:
        raise ConfigError(
            f"--certs is required: the {role} bundle `wgtlab certs init DIR` wrote (DIR/{role}"
            f"{'-N' if role == 'worker' else ''})"
        )
    if args.host not in ("127.0.0.1", "localhost"):
        raise ConfigError("without certificates, listen on loopback only (--host 127.0.0.1)")
    return None


def _scheduler_address(args: argparse.Namespace) -> str:
    """The scheduler's address, given positionally or as ``--scheduler`` (once)."""
    from wgtlab.errors import ConfigError

    given = [a for a in (args.address, args.scheduler) if a is not None]
    if not given:
        raise ConfigError(
            "which scheduler? give its address: wgtlab worker tls://HOST:PORT --certs "
            "DIR/worker-N (or --scheduler tls://HOST:PORT)"
        )
    if len(given) == 2 and given[0] != given[1]:
        raise ConfigError(
            f"two scheduler addresses, {given[0]!r} and --scheduler {given[1]!r}; give one"
        )
    return given[0]


def _identity_dir(args: argparse.Namespace) -> Path:
    if args.identity_dir is not None:
        return args.identity_dir
    import platformdirs

    root = os.environ.get(defaults.DATA_DIR_ENV) or platformdirs.user_data_dir("wgtlab")
    return Path(root) / "worker-identities"


async def _serve(server: Any) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, lambda: asyncio.ensure_future(server.close()))
    await server.finished()


def run_worker(args: argparse.Namespace) -> int:
    _tie(args)  # first: before the slow imports
    address = _scheduler_address(args)
    from distributed import Worker

    from wgtlab.cluster.dask_worker import SandboxPlugin
    from wgtlab.errors import ClusterError, ConfigError

    security = _security(args, "worker")
    if security is not None:
        from wgtlab.cluster.certs import enforce_roles

        enforce_roles("worker")  # nothing from other workers' certificates
    if security is not None and not address.startswith("tls://"):
        raise ConfigError(
            f"the scheduler's address must be a tls:// address (mutual TLS), got {address!r}"
        )
    name = args.name or (args.certs.name if args.certs is not None else None)

    async def main() -> None:
        worker = Worker(
            address,
            security=security,
            name=name,
            nthreads=args.nthreads,
            host=args.host,
            contact_address=args.contact_address,
            local_directory=None if args.local_directory is None else str(args.local_directory),
            death_timeout=args.death_timeout,
            plugins=(SandboxPlugin(identity_dir=_identity_dir(args)),),
            dashboard=False,
        )
        try:
            await worker
        except Exception as exc:
            await worker.close()
            raise ClusterError(
                f"could not join the scheduler at {address} within {args.death_timeout:.0f}"
                f" s ({type(exc).__name__}: {exc}); check the address and that --certs holds a "
                "bundle of this cluster's CA"
            ) from None
        print(f"wgtlab worker {name} at {worker.address}, scheduler {address}", flush=True)
        await _serve(worker)

    asyncio.run(main())
    return 0


def run_scheduler(args: argparse.Namespace) -> int:
    _tie(args)  # first: before the slow imports
    from distributed import Scheduler

    security = _security(args, "scheduler")
    if security is not None:
        from wgtlab.cluster.certs import enforce_roles

        enforce_roles("scheduler")  # a worker certificate only joins as a worker

    async def main() -> None:
        options: dict[str, Any] = {}
        if args.dashboard_address:
            options["dashboard_address"] = args.dashboard_address
        else:
            options["dashboard"] = False
        scheduler = Scheduler(
            security=security,
            host=args.host,
            port=args.port,
            protocol="tls://" if security is not None else "tcp://",
            scheduler_file=None if args.scheduler_file is None else str(args.scheduler_file),
            **options,
        )
        await scheduler
        print(f"wgtlab scheduler at {scheduler.address}", flush=True)
        sys.stdout.flush()
        await _serve(scheduler)

    asyncio.run(main())
    return 0
