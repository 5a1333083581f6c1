"""``wgtlab audit show | verify LOG``: read and check the CES key audit log (``$WGTLAB_AUDIT_LOG``).

``show`` needs no key (it checks nothing); ``verify`` checks the chain under ``LOG.key`` and
exits 0 only if it holds, naming the first broken entry otherwise.
"""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from wgtlab.errors import ConfigError

ID_CHARS = 12  # of key ids and dataset ids in the table; --json shows them whole
_ANCHOR = re.compile(r"([1-9][0-9]*):([0-9a-fA-F]{64})")


def register(subparsers: argparse._SubParsersAction) -> None:
    audit = subparsers.add_parser(
        "audit",
        help="show or verify the CES key audit log",
        description=(
            "The CES key audit log records every use of a CES key (encrypt, decrypt, rotate, "
            "tenant derivation, keyed inspect) as a chained JSON line. It is on when "
            "WGTLAB_AUDIT_LOG names a file (or a pipeline is given audit_log=...)."
        ),
    )
    actions = audit.add_subparsers(dest="audit_command", metavar="ACTION", required=True)

    show = actions.add_parser(
        "show",
        help="list the entries of LOG (no key needed; nothing is verified)",
        description="List the entries of LOG as a table, or as JSON with --json. Lines that "
        "are not entries are listed too; the exit status is 1 if there are any.",
    )
    show.add_argument("log", metavar="LOG", help="the audit log file")
    show.add_argument("--json", action="store_true", help="a JSON array of the entries")
    show.set_defaults(handler=run_show)

    verify = actions.add_parser(
        "verify",
        help="check LOG's chain of MACs (exit 0 only if it holds)",
        description=(
            "Check every entry's MAC and its link to the one before, under the key file "
            "LOG.key. Names the first edited, forged, removed or reordered entry. Entries "
            "removed from the end are only found against an --anchor (a tip printed by an "
            "earlier verify, kept elsewhere)."
        ),
    )
    verify.add_argument("log", metavar="LOG", help="the audit log file")
    verify.add_argument("--key-file", metavar="FILE", help="the chain key (default: LOG.key)")
    verify.add_argument(
        "--anchor", metavar="SEQ:MAC", help="an earlier tip: entry SEQ must still carry MAC"
    )
    verify.set_defaults(handler=run_verify)


def run_show(args: argparse.Namespace) -> int:
    from wgtlab.ces.audit import read_entries

    rows = list(read_entries(args.log))
    bad = sum(entry is None for _, entry, _ in rows)
    if args.json:
        docs: list[dict[str, Any]] = [
            entry.fields() if entry is not None else {"line": number, "error": problem}
            for number, entry, problem in rows
        ]
        print(json.dumps(docs, indent=2))
        return 1 if bad else 0
    table = [("SEQ", "TIME (UTC)", "OP", "KEY ID", "DATASET", "SHARDS", "USER@HOST", "PID")]
    notes: list[str] = []
    for number, entry, problem in rows:
        if entry is None:
            table.append((f"line {number}", "?", "?", "?", "?", "?", "?", "?"))
            notes.append(f"line {number}: not an audit entry: {problem}")
            continue
        key = entry.key_id[:ID_CHARS]
        if entry.new_key_id is not None:
            key += f" -> {entry.new_key_id[:ID_CHARS]}"
        if entry.tenant is not None:
            key += f" (tenant sha256 {entry.tenant[:ID_CHARS]})"
        table.append(
            (
                str(entry.seq),
                entry.time[:19].replace("T", " "),
                entry.op,
                key,
                (entry.dataset_id or "-")[:ID_CHARS],
                "-" if entry.shards is None else str(entry.shards),
                f"{entry.user}@{entry.host}",
                str(entry.pid),
            )
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    for note in notes:
        print(note)
    print(
        f"{len(rows) - bad} entries"
        + (f", {bad} unreadable lines" if bad else "")
        + f"; nothing was verified: run `wgtlab audit verify {args.log}` to check the chain"
    )
    return 1 if bad else 0


def run_verify(args: argparse.Namespace) -> int:
    from wgtlab.ces.audit import verify

    anchor = None
    if args.anchor is not None:
        match = _ANCHOR.fullmatch(args.anchor)
        if match is None:
            raise ConfigError(
                "--anchor is SEQ:MAC, an entry number and its 64-hex-digit mac, as printed by "
                "an earlier `wgtlab audit verify`"
            )
        anchor = (int(match[1]), match[2].lower())
    report = verify(args.log, key_file=args.key_file, anchor=anchor)
    print(report.summary())
    return 0 if report.ok else 1
