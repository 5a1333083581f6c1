"""``wgtlab run JOBFILE.py``: run the jobs a Python file defines on a local cluster."""

from __future__ import annotations

import argparse
import runpy
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the jobs defined in a Python file",
        description=(
            "Execute JOBFILE, then run every wgt.Job it defines at module level (or only --job) "
            "on a LocalCluster, printing each verified result."
        ),
    )
    parser.add_argument("jobfile", type=Path, help="a Python file defining wgt.Job objects")
    parser.add_argument("--job", help="run only this job (variable name or job name)")
    parser.add_argument("--workers", type=int, default=4, help="local workers (default 4)")
    parser.add_argument("--json", action="store_true", help="print each result as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run_jobfile)


def run_jobfile(args: argparse.Namespace) -> int:
    import wgtlab as wgt
    from wgtlab.cluster.manager import delegate_job
    from wgtlab.commands.progress import TextProgress
    from wgtlab.errors import JobDefinitionError

    if not args.jobfile.is_file():
        raise JobDefinitionError(f"job file {str(args.jobfile)!r} does not exist")
    namespace = runpy.run_path(str(args.jobfile), run_name="__wgtlab_job__")
    jobs = _jobs_in(namespace, wgt.Job)
    if args.job is not None:
        jobs = {k: j for k, j in jobs.items() if args.job in (k, j.name)}
    if not jobs:
        wanted = f" named {args.job!r}" if args.job else ""
        raise JobDefinitionError(
            f"{args.jobfile} defines no wgt.Job{wanted} at module level; define one with "
            "`with wgt.Job(name) as job: ...`"
        )
    failed = 0
    with wgt.LocalCluster(workers=args.workers) as cluster:
        for variable, job in jobs.items():
            progress = None if args.no_progress else TextProgress(desc=job.name)
            subscribers = [] if progress is None else [progress]
            try:
                result = delegate_job(job, cluster, subscribers=subscribers)
            finally:
                if progress is not None:
                    progress.close()
            failed += 0 if result.ok else 1
            if args.json:
                print(result.to_json())
            else:
                print(f"{variable}: {result!r}")
                print(f"  value: {result.value!r}")
    return 1 if failed else 0


def _jobs_in(namespace: dict[str, Any], job_type: type) -> dict[str, Any]:
    return {k: v for k, v in namespace.items() if isinstance(v, job_type)}
