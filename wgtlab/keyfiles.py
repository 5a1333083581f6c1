"""Local secrets kept in files only their owner can read: made once, atomically, mode 0600.

Used where wgtlab must recognise what it wrote itself (cache entries authenticated by HMAC):
whoever can write the cache but not read the key file cannot forge an entry.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

from wgtlab.errors import ConfigError

__all__ = ["SECRET_BYTES", "local_secret", "read_secret"]

SECRET_BYTES = 32


def local_secret(path: Path) -> bytes:
    """The 32-byte secret in ``path``, created (0600, atomically) if there is none yet.

    A file that others may read or write, that another user owns, or that is not 32 bytes is
    refused with a ConfigError saying how to fix it (never with its content)."""
    try:
        return read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(SECRET_BYTES))
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process made it first: theirs wins
            os.link(fresh, path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(fresh)
    return read_secret(path)


def read_secret(path: Path | str, *, check_owner: bool = True) -> bytes:
    """The 32-byte secret in ``path``, which must exist (FileNotFoundError, else): a regular
    file no one but its owner may read or write and, with ``check_owner``, owned by this user,
    as ssh treats private keys. Anything else is a ConfigError saying what is wrong (an
    OSError if it cannot be read at all)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"the key file {path} is not a regular file")
        if info.st_mode & 0o077:
            raise ConfigError(
                f"the key file {path} may be read or written by others (mode "
                f"{stat.S_IMODE(info.st_mode):o}); chmod 600 it"
            )
        if check_owner and hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            raise ConfigError(f"the key file {path} belongs to another user")
        secret = f.read(SECRET_BYTES + 1)
    if len(secret) != SECRET_BYTES:
        raise ConfigError(f"the key file {path} is damaged (not {SECRET_BYTES} bytes)")
    return secret
