"""The ``wgtlab`` command: one sub-command per concern, each defined in ``wgtlab/commands/``."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from wgtlab.errors import WgtError

# Each module exposes ``register(subparsers)``; it adds its sub-commands, each with a
# ``handler(args) -> int`` set through ``set_defaults(handler=...)``.
_COMMAND_MODULES = (
    "demo",
    "sandbox",
    "ces",
    "udf",
    "jobs",
    "cluster",
    "cache",
    "audit",
    "receipts",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wgtlab",
        description="Run untrusted compute in WebAssembly sandboxes and verify its results.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"wgtlab.commands.{name}")
        except ModuleNotFoundError as exc:  # a command module not written yet
            if exc.name != f"wgtlab.commands.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except WgtError as exc:
        print(f"wgtlab {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
