"""Local secrets kept in files only their owner can read: made once, atomically, mode 0600.

Used where wgtlab must recognise what it wrote itself (cache entries authenticated by HMAC, the
audit log's chain key) and for the user's identity key (what signs receipts): whoever can write
the cache but not read the key file cannot forge an entry. ``create_private`` and
``read_private`` are the one place these files are written and read; each kind of file names
its own error and advice in a ``Refusals``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from wgtlab.errors import ConfigError

__all__ = [
    "SECRET_BYTES",
    "Refusals",
    "create_private",
    "local_secret",
    "read_private",
    "read_secret",
]

SECRET_BYTES = 32


@dataclass(frozen=True)
class Refusals:
    """What the owner of one kind of private file is told when it is refused: ``error`` is
    raised with one of the messages, ``{path}``, ``{mode}`` (octal) and ``{uid}`` filled in."""

    error: type[ConfigError] = ConfigError
    not_regular: str = "the key file {path} is not a regular file"
    shared: str = "the key file {path} may be read or written by others (mode {mode}); chmod 600 it"
    foreign: str = "the key file {path} belongs to another user"


def create_private(path: Path, content: bytes) -> bool:
    """Put ``content`` at ``path`` (mode 0600, synced) unless a file is there already; True if
    this call made it. The file is written aside and linked, never renamed, into place: a file
    another process made first is kept (theirs wins) and no reader sees half of one."""
    fresh = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(fresh, path)
        except FileExistsError:
            return False
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(fresh)


def read_private(
    path: Path | str,
    limit: int,
    *,
    check_owner: bool = True,
    refusals: Refusals = Refusals(),
) -> bytes:
    """At most ``limit`` + 1 bytes of ``path``, which must exist (FileNotFoundError, else): a
    regular file (a symbolic link is not followed) no one but its owner may read or write and,
    with ``check_owner``, owned by this user, as ssh treats private keys. Anything else is
    ``refusals.error`` saying what is wrong (an OSError if it cannot be read at all)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise refusals.error(refusals.not_regular.format(path=path))
        if info.st_mode & 0o077:
            mode = f"{stat.S_IMODE(info.st_mode):o}"
            raise refusals.error(refusals.shared.format(path=path, mode=mode))
        if check_owner and hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            raise refusals.error(refusals.foreign.format(path=path, uid=info.st_uid))
        return f.read(limit + 1)


def local_secret(path: Path) -> bytes:
    """The 32-byte secret in ``path``, created (0600, atomically) if there is none yet.

    A file that others may read or write, that another user owns, or that is not 32 bytes is
    refused with a ConfigError saying how to fix it (never with its content)."""
    try:
        return read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    create_private(path, secrets.token_bytes(SECRET_BYTES))
    return read_secret(path)


def read_secret(path: Path | str, *, check_owner: bool = True) -> bytes:
    """The 32-byte secret in ``path`` (see ``read_private``); one of another length is a
    ConfigError."""
    secret = read_private(path, SECRET_BYTES, check_owner=check_owner)
    if len(secret) != SECRET_BYTES:
        raise ConfigError(f"the key file {path} is damaged (not {SECRET_BYTES} bytes)")
    return secret
