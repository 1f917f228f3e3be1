"""Storage the web app needs besides the library database.

- :class:`BucketFile`: rate-limit token buckets in a small SQLite file next to the data
  (``$PAPERSIFT_HOME/ratelimit.sqlite``), so every worker process of one server draws on
  the same buckets. The state is disposable: WAL without fsync, and after a crash the
  buckets simply start full.
- :data:`Session`: the handle to the library database that the web layer passes from
  ``Database.session()`` to the store and the services (it never writes SQL itself).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.orm import Session as Session

from papersift.home import create_private_file, ensure_private_dir

__all__ = ["BucketFile", "BucketFileError", "Refill", "Session"]

# (tokens, at) stored for a key, or None -> (tokens left, seconds to wait); see BucketFile.take.
Refill = Callable[[tuple[float, float] | None, float], tuple[float, float]]


class BucketFileError(Exception):
    """The bucket file cannot be opened, read or written (the caller falls back)."""


class BucketFile:
    """Token buckets (scope, key) -> (tokens, time of the last take) in one SQLite file,
    one connection per thread. Each take is one short write transaction."""

    def __init__(self, path: Path, *, timeout: float = 2.0) -> None:
        self.path = Path(path)
        self._timeout = timeout
        self._local = threading.local()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            ensure_private_dir(self.path.parent)
            create_private_file(self.path)  # owner-only, like every file of the home
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS buckets (scope TEXT NOT NULL, key TEXT NOT NULL,"
                " tokens REAL NOT NULL, at REAL NOT NULL, PRIMARY KEY (scope, key))"
            )
            self._local.conn = conn
        return conn

    def take(
        self,
        scope: str,
        key: str,
        clock: Callable[[], float],
        refill: Refill,
        *,
        prune_older_than: float | None = None,
    ) -> float:
        """Apply ``refill(stored, now)`` to one bucket atomically across processes and return
        its wait; with ``prune_older_than`` (seconds), also drop the scope's buckets untouched
        for that long. ``now`` is read from ``clock`` once the write lock is held."""
        try:
            return self._take(scope, key, clock, refill, prune_older_than)
        except (sqlite3.Error, OSError) as exc:
            self._local.conn = None
            raise BucketFileError(f"{self.path} unusable ({exc})") from exc

    def _take(
        self,
        scope: str,
        key: str,
        clock: Callable[[], float],
        refill: Refill,
        prune_older_than: float | None,
    ) -> float:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = clock()
            row = conn.execute(
                "SELECT tokens, at FROM buckets WHERE scope = ? AND key = ?", (scope, key)
            ).fetchone()
            tokens, wait = refill((float(row[0]), float(row[1])) if row else None, now)
            conn.execute(
                "INSERT OR REPLACE INTO buckets(scope, key, tokens, at) VALUES (?, ?, ?, ?)",
                (scope, key, tokens, now),
            )
            if prune_older_than is not None:
                conn.execute(
                    "DELETE FROM buckets WHERE scope = ? AND at < ?",
                    (scope, now - prune_older_than),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return wait
