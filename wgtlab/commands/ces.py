"""``wgtlab ces encode | decode | inspect`` (shard files) and ``wgtlab keygen`` (a fresh key).

The key comes from ``--key-file`` or ``--tenant`` (a tenant key derived from the master secret
in ``--master-secret-file`` or ``$CES_MASTER_SECRET``), never both; with neither, from
``$CES_ENCRYPTION_KEY``. Never a random key: shards made under a key that dies with the command
could never be decoded.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from wgtlab import defaults
from wgtlab.errors import ConfigError, KeyConfigError

PROGRESS_MIN_BYTES = 64 << 20  # smaller files finish before a bar is worth drawing


def register(subparsers: argparse._SubParsersAction) -> None:
    keygen = subparsers.add_parser(
        "keygen",
        help="print a fresh random 32-byte CES key as 64 hex characters",
        description=(
            f"Print a new key for {defaults.CES_KEY_ENV}, e.g. "
            f"`export {defaults.CES_KEY_ENV}=$(wgtlab keygen)`. Keep it secret and backed up: "
            "shards cannot be decoded without it."
        ),
    )
    keygen.set_defaults(handler=run_keygen)

    ces = subparsers.add_parser(
        "ces",
        help="compress, encrypt and shard files (CES)",
        description="Encode a file into erasure-coded, encrypted shards, and back.",
    )
    commands = ces.add_subparsers(dest="ces_command", metavar="ACTION", required=True)

    encode = commands.add_parser("encode", help="shard FILE into the directory DIR")
    encode.add_argument("file", help="the file to encode (path or fsspec URL)")
    encode.add_argument("-o", "--output", required=True, metavar="DIR", help="shard directory")
    encode.add_argument("--data-shards", type=int, default=defaults.CES_DATA_SHARDS)
    encode.add_argument("--parity-shards", type=int, default=defaults.CES_PARITY_SHARDS)
    encode.add_argument(
        "--level",
        type=int,
        default=defaults.CES_COMPRESSION_LEVEL,
        help="zstd compression level (default %(default)s)",
    )
    encode.add_argument("--force", action="store_true", help="replace a shard set in DIR")
    _key_arguments(encode)
    encode.set_defaults(handler=run_encode)

    decode = commands.add_parser("decode", help="rebuild the file from the shards in DIR")
    decode.add_argument("directory", metavar="DIR", help="shard directory (or fsspec URL)")
    decode.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="file to write (not a directory)"
    )
    decode.add_argument("--force", action="store_true", help="replace FILE if it exists")
    _key_arguments(decode)
    decode.set_defaults(handler=run_decode)

    inspect = commands.add_parser(
        "inspect",
        help="show the header fields and each shard's state",
        description=(
            "Show the shard set's header fields, which shards are present, missing or damaged, "
            "and whether the data is recoverable (exit status 0 if it is, 1 if not). Without a "
            "key, checksums are verified but header MACs are not."
        ),
    )
    inspect.add_argument("directory", metavar="DIR", help="shard directory (or fsspec URL)")
    _key_arguments(inspect)
    inspect.set_defaults(handler=run_inspect)


def _key_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--key-file",
        type=Path,
        help=(
            "file holding the key: 64 hex characters (as `wgtlab keygen` prints) or exactly 32 "
            f"raw bytes (default: ${defaults.CES_KEY_ENV}; not with --tenant)"
        ),
    )
    parser.add_argument(
        "--tenant", help="derive this tenant's key from the master secret (not with --key-file)"
    )
    parser.add_argument(
        "--master-secret-file",
        type=Path,
        help=(
            "with --tenant: file holding the master secret in hex "
            f"(default: ${defaults.CES_MASTER_SECRET_ENV})"
        ),
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_keygen(args: argparse.Namespace) -> int:
    from wgtlab.ces.keys import generate_key

    print(generate_key().hex())
    return 0


def run_encode(args: argparse.Namespace) -> int:
    pipe = _pipeline(
        args,
        required=True,
        compression_level=args.level,
        data_shards=args.data_shards,
        parity_shards=args.parity_shards,
    )
    size = _size(args.file)  # a missing file or a directory is refused before any work
    with _ByteProgress(size, args, "encode") as progress:
        manifest = pipe.process_file(
            args.file, args.output, overwrite=args.force, progress=progress
        )
    print(
        f"{args.file}: {size} bytes -> {len(manifest.files)} shards in {args.output} "
        f"({pipe.data_shards} data + {pipe.parity_shards} parity; any {pipe.data_shards} "
        f"rebuild it), dataset {manifest.dataset_id}, key id {pipe.key_id}"
    )
    return 0


def run_decode(args: argparse.Namespace) -> int:
    from wgtlab.ces import store
    from wgtlab.ces.pipeline import output_target

    pipe = _pipeline(args, required=True)
    output_target(args.output, overwrite=args.force)  # a directory or existing file: refused now
    fs, root = store.location(args.directory)
    size = store.read_manifest(fs, root).original_size  # only sizes the progress bar
    with _ByteProgress(size, args, "decode") as progress:
        written = pipe.reconstruct_file(
            args.directory, args.output, overwrite=args.force, progress=progress
        )
    print(f"{args.directory}: rebuilt {written} bytes into {args.output}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from wgtlab.ces import inspect

    pipe = _pipeline(args, required=False)
    report = inspect(args.directory, key=pipe)
    print(report.summary())
    return 0 if report.recoverable else 1


def _pipeline(args: argparse.Namespace, *, required: bool, **layout: Any) -> Any:
    """The pipeline for the key the arguments and environment name (None if optional and
    no key is configured). Two explicit key sources at once are refused, not ranked."""
    from wgtlab.ces.keys import derive_tenant_key, key_from_env, parse_key_bytes
    from wgtlab.ces.pipeline import CESPipeline

    if args.tenant is not None and args.key_file is not None:
        raise ConfigError(
            "--key-file and --tenant both name a key; give one: --key-file FILE for a key of "
            "its own, or --tenant ID to derive the tenant's key from the master secret"
        )
    if args.master_secret_file is not None and args.tenant is None:
        raise ConfigError(
            "--master-secret-file is the secret tenant keys are derived from; use it with "
            "--tenant ID"
        )
    key: bytes | None
    if args.tenant is not None:
        secret = _read_secret(
            args.master_secret_file, defaults.CES_MASTER_SECRET_ENV, "the master secret"
        )
        key = derive_tenant_key(args.tenant, secret)
    elif args.key_file is not None:
        key = parse_key_bytes(_read_bytes(args.key_file), source=f"the key file {args.key_file}")
    else:
        key = key_from_env()
    if key is None:
        if not required:
            return None
        raise KeyConfigError(
            f"no key: set {defaults.CES_KEY_ENV} (64 hex characters, e.g. from `wgtlab keygen`) "
            "or pass --key-file; the CLI never uses a random key, since nothing could decode "
            "those shards afterwards"
        )
    return CESPipeline(key, **layout)


def _read_secret(path: Path | None, variable: str, what: str) -> bytes:
    if path is not None:
        # Decoded by hand: a binary file must not raise UnicodeDecodeError, which quotes a byte.
        text, source = _read_bytes(path).decode("latin-1").strip(), f"{what} file {path}"
    else:
        text, source = os.environ.get(variable, ""), f"the environment variable {variable}"
        if not text:
            raise KeyConfigError(
                f"--tenant needs {what}: set {variable} (hex, at least 32 characters) or pass "
                "--master-secret-file"
            )
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise KeyConfigError(
            f"{source} is not hex; expected an even number of hex digits"
        ) from None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None


def _size(url: str) -> int:
    from wgtlab.ces.pipeline import source_size
    from wgtlab.ces.store import location

    fs, path = location(url)
    return source_size(fs, path, url)


class _ByteProgress:
    """A tqdm bar in bytes on a terminal for large inputs; otherwise a no-op."""

    def __init__(self, total: int, args: argparse.Namespace, desc: str) -> None:
        self.bar = None
        if total >= PROGRESS_MIN_BYTES and not args.no_progress and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024)

    def __enter__(self) -> Any:
        return self.bar.update if self.bar is not None else None

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
