"""The data folder's files are private: subscriber addresses, keys and sessions live there.

papersift creates its home as 0700 and the files it creates there as 0600, whatever the
umask, so another local user cannot read the database or the signing key. SQLite gives its
``-wal`` and ``-shm`` files the mode of the database file, so creating that file first is
enough for them too.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


class KeyFileError(ValueError):
    """A key file exists but holds no key: refusing beats signing with an empty key."""


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` and any missing parents; the folders created here are owner-only.

    An existing folder keeps its mode (an operator may have chosen a group on purpose)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(folder, DIR_MODE)  # mkdir's mode is filtered by the umask


def create_private_file(path: Path) -> None:
    """Create ``path`` empty and owner-only unless it exists (then it is left as it is)."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def file_key(path: Path) -> str:
    """The key in ``path``, created once: each process writes a complete key to a file of its
    own and hard-links it into place, so the first link wins and no reader ever sees a
    partial or empty key, however many processes start at once."""
    key = _read_key(path)
    if key:
        return key
    ensure_private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=".secret-", dir=path.parent)  # 0600 by construction
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another process won; use its key
    finally:
        os.unlink(tmp)
    key = _read_key(path)
    if not key:
        raise KeyFileError(f"{path} is empty or unreadable: remove it to make a new key")
    return key


def _read_key(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
