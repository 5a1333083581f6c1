"""``wgtlab verify RECEIPT`` (check a receipt, optionally against the data and by re-running
chunks) and ``wgtlab identity`` (the key that signs your receipts)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

VERIFY_DESCRIPTION = """\
Check a receipt (what result.receipt().save(PATH) wrote): its DSSE envelope and signature, the
in-toto statement, every worker's signature and quorum, and the Merkle roots recomputed from the
chunk records. With the data the job read (--data FILE: the file's bytes; a table from Parquet or
CSV; an array from .npy; a list from JSON; or --shards DIR for a CES shard set, opened with
$CES_ENCRYPTION_KEY) its input digests are recomputed, and --audit N re-runs N random chunks
(or all) in the local sandbox and compares their outcome digests. Prints a table of what was
checked and the verdict; the exit status is 0 only if every check holds."""

IDENTITY_DESCRIPTION = """\
Show your identity: the Ed25519 key that signs your receipts, made on first use and kept with
mode 0600 in your config directory (or at $WGTLAB_IDENTITY). Prints its fingerprint, public key
and where it lives; --pem prints only the public key, for others to pin your receipts with
`wgtlab verify RECEIPT --key FILE`."""


def register(subparsers: argparse._SubParsersAction) -> None:
    verify = subparsers.add_parser(
        "verify",
        help="check a receipt (and the data, and re-run chunks)",
        description=VERIFY_DESCRIPTION,
    )
    verify.add_argument("receipt", type=Path, metavar="RECEIPT", help="a saved receipt (JSON)")
    source = verify.add_mutually_exclusive_group()
    source.add_argument("--data", type=Path, metavar="FILE", help="the data the job read")
    source.add_argument("--shards", metavar="DIR", help="the CES shard set the job read")
    verify.add_argument(
        "--audit",
        default="0",
        metavar="N|all",
        help="re-run N random chunks (or all) in the local sandbox (needs --data or --shards)",
    )
    verify.add_argument("--seed", type=int, help="choose the audited chunks reproducibly")
    verify.add_argument(
        "--key",
        metavar="PUB",
        help="the signer required: a public key (64 hex characters or PEM), a file holding one, "
        "or a fingerprint ed25519:...",
    )
    verify.set_defaults(handler=run_verify)

    identity = subparsers.add_parser(
        "identity", help="show the key that signs your receipts", description=IDENTITY_DESCRIPTION
    )
    identity.add_argument("--pem", action="store_true", help="print only the public key (PEM)")
    identity.set_defaults(handler=run_identity)


def run_verify(args: argparse.Namespace) -> int:
    from wgtlab.errors import ConfigError
    from wgtlab.receipts import Receipt
    from wgtlab.receipts.checks import Audit

    audit: Audit
    if args.audit == "all":
        audit = "all"
    elif args.audit.isdigit():
        audit = int(args.audit)
    else:
        raise ConfigError(f"--audit takes a number of chunks or 'all', got {args.audit[:20]!r}")
    receipt = Receipt.load(args.receipt)
    report = receipt.verify(
        args.key, data=args.data, shards=args.shards, audit=audit, seed=args.seed
    )
    print(f"receipt {args.receipt}")
    print(report.table())
    return 0 if report.ok else 1


def run_identity(args: argparse.Namespace) -> int:
    from wgtlab.receipts import user_identity

    identity = user_identity()
    if identity.created:
        print(f"wgtlab identity: made a new identity key at {identity.path}", file=sys.stderr)
    if args.pem:
        print(identity.public_pem, end="")
        return 0
    print(f"fingerprint  {identity.fingerprint}")
    print(f"public key   {identity.public_bytes.hex()}")
    print(f"key file     {identity.path} (private: keep it; mode 0600)")
    print(identity.public_pem, end="")
    return 0
