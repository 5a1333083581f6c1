"""``wgtlab run JOBFILE.py``: run the jobs a Python file defines on a local cluster."""

from __future__ import annotations

import argparse
import dataclasses
import os
import runpy
import sys
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wgtlab.jobs.job import DefinedJob, Job

DESCRIPTION = """\
Execute JOBFILE, then run every wgt.Job it defines at module level (or only --job) on a
LocalCluster, printing each verified result. A @wgt.Job.define job needs data: with --data FILE
it runs over that file's bytes; the file can also give it data itself, as a plain job
(`job = myjob.job(data)`). Without either it is not run (a note says so), and a file with
nothing else to run is an error. Every job is validated before any runs; an error in the file
itself is reported as one line with its file and line number. A job that fails (a chunk that
did not verify) is reported as one line, the others still run, and the exit status is 1."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the jobs defined in a Python file",
        description=DESCRIPTION,
    )
    parser.add_argument("jobfile", type=Path, help="a Python file defining wgt.Job objects")
    parser.add_argument("--job", help="run only this job (variable name or job name)")
    parser.add_argument(
        "--data",
        type=Path,
        metavar="FILE",
        help="data for the file's @wgt.Job.define jobs: they run over FILE's bytes",
    )
    parser.add_argument("--workers", type=int, default=4, help="local workers (default 4)")
    parser.add_argument("--json", action="store_true", help="print each result as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--no-cache",
        action="store_true",
        help="compute every chunk, even those verified before (the verified-result cache)",
    )
    parser.set_defaults(handler=run_jobfile)


def run_jobfile(args: argparse.Namespace) -> int:
    import wgtlab as wgt
    from wgtlab.cluster.manager import delegate_job
    from wgtlab.errors import ChunkFailed
    from wgtlab.jobs.events import TextProgress
    from wgtlab.views.messages import chunk_failed_line

    # Every job planned (checked) before a cluster starts or a bar is drawn.
    plans = {
        variable: dataclasses.replace(job.plan(), cache=not args.no_cache)
        for variable, job in _jobs_to_run(args).items()
    }
    failed = 0
    with wgt.LocalCluster(workers=args.workers) as cluster:
        for plan in plans.values():  # replicas against workers, before any job runs
            plan.check_workers(len(cluster.worker_names()))
        for variable, plan in plans.items():
            progress = None if args.no_progress else TextProgress(desc=plan.name)
            subscribers = [] if progress is None else [progress]
            try:
                result = delegate_job(plan, cluster, subscribers=subscribers)
            except ChunkFailed as exc:
                # One line, as for any error, with advice for the job file rather than for
                # Python callers; the other jobs still run, and the exit status says it failed.
                print(
                    f"wgtlab run: ChunkFailed: {chunk_failed_line(exc)} (job.on_error('continue')"
                    " in the job file runs every chunk and combines those that verify)",
                    file=sys.stderr,
                )
                failed += 1
                if args.json and exc.result is not None:
                    print(exc.result.to_json())  # the partial result: which chunks did what
                continue
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


def _jobs_to_run(args: argparse.Namespace) -> dict[str, Job]:
    """Variable name -> plain ``Job``, for every job the file defines (or ``--job``), with
    ``@wgt.Job.define`` jobs given the ``--data`` data."""
    from wgtlab.errors import ConfigError, JobDefinitionError
    from wgtlab.jobs.job import DefinedJob, Job

    if args.jobfile.is_dir():
        raise JobDefinitionError(
            f"job file {str(args.jobfile)!r} is a directory; give the Python file that "
            "defines the jobs"
        )
    if not args.jobfile.is_file():
        raise JobDefinitionError(f"job file {str(args.jobfile)!r} does not exist")
    namespace = _execute(args.jobfile)
    defines = {k: v for k, v in namespace.items() if isinstance(v, Job | DefinedJob)}
    selected = {k: v for k, v in defines.items() if args.job in (None, k, v.name)}
    if args.job is not None and not selected:
        raise JobDefinitionError(_no_such_job(args.jobfile, args.job, defines))
    jobs = {k: v for k, v in selected.items() if isinstance(v, Job)}
    defined = {k: v for k, v in selected.items() if isinstance(v, DefinedJob)}
    if args.data is not None:
        if not defined:
            raise ConfigError(
                f"--data is the data for @wgt.Job.define jobs, and {args.jobfile} defines none"
                f"{_named(args.job)}; a wgt.Job takes its data from wgt.input(...) in the file"
            )
        data = _read_data(args.data)
        jobs.update({k: d.job(data) for k, d in defined.items()})
        return jobs
    # A defined job the file already gave data (``job = myjob.job(data)``) runs as that job.
    kernels = {id(j.kernel_obj) for j in jobs.values()}
    waiting = [k for k, d in defined.items() if id(d.kernel_obj) not in kernels]
    if waiting and not jobs:
        raise JobDefinitionError(
            f"{args.jobfile} defines the @wgt.Job.define job {_listing(waiting)} but no data "
            "for it: pass --data FILE to run it over that file's bytes, or give it data in "
            f"the file (job = {waiting[0]}.job(data))"
        )
    if waiting:
        print(
            f"wgtlab run: note: not running the @wgt.Job.define job {_listing(waiting)}: it "
            "needs data (pass --data FILE)",
            file=sys.stderr,
        )
    if not jobs:
        raise JobDefinitionError(
            f"{args.jobfile} defines no wgt.Job{_named(args.job)} at module level; define one "
            "with `with wgt.Job(name) as job: ...`"
        )
    return jobs


def _execute(path: Path) -> dict[str, Any]:
    """The job file's globals; an error in it -> one ``JobDefinitionError`` naming its line."""
    from wgtlab.errors import JobDefinitionError

    try:
        return runpy.run_path(str(path), run_name="__wgtlab_job__")
    except (Exception, SystemExit) as exc:
        if isinstance(exc, SyntaxError) and _same_file(exc.filename, path):
            line, message = exc.lineno, exc.msg
        else:
            line, message = _line_in(exc.__traceback__, path), _one_line(exc)
        where = f"{path} line {line}" if line else str(path)
        detail = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
        raise JobDefinitionError(f"{where}: {detail}") from None


def _line_in(tb: TracebackType | None, path: Path) -> int | None:
    """The line of the innermost frame of the traceback that runs the job file itself."""
    line = None
    while tb is not None:
        if _same_file(tb.tb_frame.f_code.co_filename, path):
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _same_file(filename: str | None, path: Path) -> bool:
    return filename is not None and os.path.abspath(filename) == os.path.abspath(path)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def _read_data(path: Path) -> bytes:
    from wgtlab.errors import ConfigError

    if path.is_dir():
        raise ConfigError(f"--data {str(path)!r} is a directory; give a file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read --data {str(path)!r}: {exc.strerror}") from None


def _no_such_job(path: Path, wanted: str, defines: dict[str, Job | DefinedJob]) -> str:
    """``--job NAME`` matches nothing: the jobs the file does define, the likeliest first."""
    from wgtlab.views.messages import did_you_mean

    if not defines:
        return (
            f"{path} defines no job at module level, so none named {wanted!r}; define one with "
            "`with wgt.Job(name) as job: ...`"
        )
    # A variable and its job's name are one job: suggested once, by the closer of the two.
    job_of = {name: k for k, j in defines.items() for name in (k, j.name)}
    guess = did_you_mean(wanted, job_of, same=job_of.get)
    listed = ", ".join(
        repr(k) if k == j.name else f"{k!r} (job {j.name!r})" for k, j in defines.items()
    )
    return (
        f"{path} defines no job named {wanted!r}{'; ' if guess else ''}{guess} (--job takes a "
        f"variable or job name; the file defines {listed})"
    )


def _named(job: str | None) -> str:
    return f" named {job!r}" if job else ""


def _listing(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)
