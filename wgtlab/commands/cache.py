"""``wgtlab cache info`` / ``wgtlab cache clear``: the verified-result cache reruns reuse."""

from __future__ import annotations

import argparse

from wgtlab.errors import ConfigError
from wgtlab.jobs.cache import RESULT_CACHE_ENV, ResultCache


def register(subparsers: argparse._SubParsersAction) -> None:
    cache = subparsers.add_parser(
        "cache",
        help="inspect or clear the verified-result cache",
        description=(
            "Verified chunk outcomes are kept in SQLite (the wgtlab cache directory, or "
            f"${RESULT_CACHE_ENV}; 'off' turns the cache off), so a rerun, or a job after a "
            "restart, reuses them. Entries are authenticated by a key file beside the database."
        ),
    )
    commands = cache.add_subparsers(dest="cache_command", metavar="ACTION", required=True)
    info = commands.add_parser("info", help="where the cache is, its entries and its size")
    info.set_defaults(handler=info_command)
    clear = commands.add_parser("clear", help="remove every entry")
    clear.set_defaults(handler=clear_command)


def _cache() -> ResultCache:
    cache = ResultCache.default()
    if cache is None:
        raise ConfigError(f"the verified-result cache is off (${RESULT_CACHE_ENV}=off)")
    return cache


def info_command(args: argparse.Namespace) -> int:
    info = _cache().info()
    print(f"verified-result cache: {info['path']}")
    print(f"  entries: {info['entries']:,}")
    print(f"  size:    {info['bytes']:,} bytes (at most {info['max_bytes']:,})")
    return 0


def clear_command(args: argparse.Namespace) -> int:
    cache = _cache()
    removed = cache.clear()
    print(f"removed {removed:,} entries from {cache.path}")
    return 0
