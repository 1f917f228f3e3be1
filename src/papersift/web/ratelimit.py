"""Token buckets for write endpoints (votes, subscriptions).

Each key (a visitor id or a client IP) owns a bucket of ``capacity`` tokens refilled at
``rate`` tokens per second; a request takes one token or is refused with the seconds to
wait.

The app keeps its buckets in a small SQLite file next to its data
(``$PAPERSIFT_HOME/ratelimit.sqlite``, :class:`SharedTokenBuckets`), so every worker of
``papersift serve --workers N`` draws on the same buckets and the limit is the configured
one, not N times it. One take is one short write transaction (WAL, no fsync: the state is
disposable; after a crash buckets start full). If the file cannot be used the limiter falls
back to buckets in the process (:class:`TokenBuckets`) and says so in the log. Several hosts
behind one balancer would need a network store (e.g. Redis) instead.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("papersift.web")


@dataclass
class Limit:
    capacity: float
    rate: float  # tokens per second


class TokenBuckets:
    """Thread-safe token buckets, one per key."""

    def __init__(self, limit: Limit, *, max_keys: int = 100_000, clock=time.monotonic) -> None:
        self.limit = limit
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if allowed, else the seconds until one is free."""
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.limit.capacity, now))
            tokens = min(self.limit.capacity, tokens + (now - last) * self.limit.rate)
            if tokens >= 1.0:
                tokens -= 1.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / self.limit.rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait


class SharedTokenBuckets:
    """Token buckets in a SQLite file, shared by every process that opens the same file.

    ``scope`` separates limiters sharing one file (votes, sign-ups). Buckets that have
    refilled completely are the same as absent ones, so they are pruned now and then.
    """

    PRUNE_EVERY = 1000  # takes between two prunings

    def __init__(
        self, limit: Limit, path: Path, scope: str, *, clock=time.time, timeout: float = 2.0
    ) -> None:
        self.limit = limit
        self.path = Path(path)
        self.scope = f"{scope}:{limit.capacity:g}:{limit.rate:g}"
        self._clock = clock  # wall clock: it must mean the same in every process
        self._timeout = timeout
        self._local = threading.local()
        self._fallback = TokenBuckets(limit, clock=clock)
        self._takes = 0
        self._warned = False

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=self._timeout, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS buckets (scope TEXT NOT NULL, key TEXT NOT NULL,"
                " tokens REAL NOT NULL, at REAL NOT NULL, PRIMARY KEY (scope, key))"
            )
            self._local.conn = conn
        return conn

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if allowed, else the seconds until one is free."""
        try:
            return self._take(key)
        except (sqlite3.Error, OSError) as exc:
            if not self._warned:
                log.warning(
                    "rate limits: %s unusable (%s); limiting per process instead", self.path, exc
                )
                self._warned = True
            self._local.conn = None
            return self._fallback.take(key)

    def _take(self, key: str) -> float:
        conn = self._conn()
        limit = self.limit
        conn.execute("BEGIN IMMEDIATE")
        try:
            now = self._clock()
            row = conn.execute(
                "SELECT tokens, at FROM buckets WHERE scope = ? AND key = ?", (self.scope, key)
            ).fetchone()
            tokens, last = row if row else (limit.capacity, now)
            tokens = min(limit.capacity, tokens + max(0.0, now - last) * limit.rate)
            if tokens >= 1.0:
                tokens -= 1.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / limit.rate
            conn.execute(
                "INSERT OR REPLACE INTO buckets(scope, key, tokens, at) VALUES (?, ?, ?, ?)",
                (self.scope, key, tokens, now),
            )
            self._takes += 1
            if self._takes % self.PRUNE_EVERY == 0:
                full_after = limit.capacity / limit.rate
                conn.execute(
                    "DELETE FROM buckets WHERE scope = ? AND at < ?",
                    (self.scope, now - full_after),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return wait


class RateLimiter:
    """Per-visitor and per-IP limits checked together (both must allow the request).

    With ``store`` (a file path) the buckets are shared by every process using that file;
    ``scope`` names this limiter inside it.
    """

    def __init__(
        self,
        per_visitor: Limit,
        per_ip: Limit,
        *,
        store: Path | str | os.PathLike | None = None,
        scope: str = "default",
    ) -> None:
        self.visitors: TokenBuckets | SharedTokenBuckets
        self.ips: TokenBuckets | SharedTokenBuckets
        if store is None:
            self.visitors = TokenBuckets(per_visitor)
            self.ips = TokenBuckets(per_ip)
        else:
            self.visitors = SharedTokenBuckets(per_visitor, Path(store), f"{scope}/visitor")
            self.ips = SharedTokenBuckets(per_ip, Path(store), f"{scope}/ip")

    def check(self, visitor: str | None, ip: str | None) -> int:
        """0 if allowed, else whole seconds to put in a Retry-After header."""
        wait = self.ips.take(f"ip:{ip or '-'}")
        if visitor:
            wait = max(wait, self.visitors.take(f"v:{visitor}"))
        return math.ceil(wait) if wait > 0 else 0


def store_path(home: Path | str) -> Path:
    """Where an app serving ``home`` keeps its shared rate-limit buckets."""
    return Path(home) / "ratelimit.sqlite"


# Votes: a burst of 20 then one every 3 s per visitor; an IP (a lab behind NAT) gets 5x that.
VOTE_LIMITS = (Limit(capacity=20, rate=1 / 3), Limit(capacity=100, rate=5 / 3))
