"""``wgtlab udf build`` / ``wgtlab udf info``: the Python-in-WebAssembly runner behind @wgt.udf.

Building ahead of time (CI does, once) moves the 10-30 s first build and compile out of the first
notebook cell that uses @wgt.udf; later processes load the compiled runner from disk.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    udf = subparsers.add_parser(
        "udf",
        help="build or inspect the Python-in-WebAssembly runner used by @wgt.udf",
        description=(
            "The runner is CPython compiled to WebAssembly by componentize-py, with no imports "
            "at all; it is built from installed packages (no download) and cached on disk "
            "($WGTLAB_CACHE_DIR, else the user cache directory)."
        ),
    )
    commands = udf.add_subparsers(dest="udf_command", metavar="ACTION", required=True)
    build = commands.add_parser(
        "build",
        help="build and compile the runner now (a no-op when it is cached)",
        description=(
            "Build the runner component and compile it for this machine, then check that every "
            "promised standard-library module is inside. Another process building at the same "
            "time is waited for, not duplicated."
        ),
    )
    build.add_argument("--force", action="store_true", help="rebuild even if a runner is cached")
    build.set_defaults(handler=build_command)
    info = commands.add_parser(
        "info",
        help="where the runner is cached and what it is built from (builds nothing)",
    )
    info.set_defaults(handler=info_command)


def build_command(args: argparse.Namespace) -> int:
    from wgtlab.sandbox.python.component import build_runner, runner_info

    timings = build_runner(force=args.force)
    for line in runner_info().lines():
        print(line)
    print(
        f"ready in {sum(timings.values()):.1f} s (build or load {timings['build']:.1f} s, "
        f"compile or load {timings['compile']:.1f} s, check {timings['check']:.2f} s)"
    )
    return 0


def info_command(args: argparse.Namespace) -> int:
    from wgtlab.sandbox.python.component import runner_info

    for line in runner_info().lines():
        print(line)
    return 0
