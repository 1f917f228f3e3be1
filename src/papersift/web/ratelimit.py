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
behind one balancer share the PostgreSQL database instead: with a PostgreSQL ``db`` the
buckets live in its ``rate_buckets`` table (:class:`~papersift.store.buckets.DbBuckets`),
or in Redis when ``redis_url`` is set (:class:`~papersift.store.buckets.RedisBuckets`; a
Redis that is away means limits per process until it is back, said once in the log).

:class:`ViewCounter` counts a paper view once per viewer, paper and day, in the database
(so workers and hosts agree; in Redis when ``redis_url`` is set), and at most
``views_per_ip_paper`` a day from one address.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from papersift.store import votes as vote_store
from papersift.store.db import Database, Session
from papersift.store.web_state import BucketFile, BucketFileError, Refill

if TYPE_CHECKING:
    from papersift.store.buckets import RedisViewMarks

log = logging.getLogger("papersift.web")


@dataclass
class Limit:
    capacity: float
    rate: float  # tokens per second

    def refill(self, stored: tuple[float, float] | None, now: float) -> tuple[float, float]:
        """Take one token from a bucket last at ``stored`` = (tokens, time), or a full one:
        (tokens left, 0.0) if allowed, else (tokens, seconds until one is free)."""
        tokens, last = stored or (self.capacity, now)
        tokens = min(self.capacity, tokens + max(0.0, now - last) * self.rate)
        if tokens >= 1.0:
            return tokens - 1.0, 0.0
        return tokens, (1.0 - tokens) / self.rate


class TokenBuckets:
    """Thread-safe token buckets, one per key, in this process."""

    def __init__(
        self,
        limit: Limit,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.max_keys = max_keys
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if allowed, else the seconds until one is free."""
        now = self._clock()
        with self._lock:
            tokens, wait = self.limit.refill(self._buckets.pop(key, None), now)
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait


class BucketStore(Protocol):
    """Where shared buckets live: a SQLite file (one host) or the database (any hosts)."""

    @property
    def path(self) -> object: ...

    def take(
        self,
        scope: str,
        key: str,
        clock: Callable[[], float],
        refill: Refill,
        *,
        prune_older_than: float | None = None,
    ) -> float: ...


def bucket_store(
    home: Path | str, db: Database | None = None, *, redis_url: str | None = None
) -> BucketStore:
    """The buckets of an app: in Redis when ``redis_url`` is set, else in a PostgreSQL
    database when it has one (both shared by every host), else in
    ``$PAPERSIFT_HOME/ratelimit.sqlite`` (shared by every worker of one host)."""
    if redis_url:
        from papersift.store.buckets import RedisBuckets

        return RedisBuckets(redis_url)
    if db is not None and db.engine.dialect.name == "postgresql":
        from papersift.store.buckets import DbBuckets

        return DbBuckets(db)
    return BucketFile(store_path(home))


class SharedTokenBuckets:
    """Token buckets in a SQLite file, shared by every process that opens the same file.

    ``scope`` separates limiters sharing one file (votes, sign-ups). Buckets that have
    refilled completely are the same as absent ones, so they are pruned now and then.
    """

    PRUNE_EVERY = 1000  # takes between two prunings

    def __init__(
        self,
        limit: Limit,
        path: Path | BucketStore,
        scope: str,
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = 2.0,
    ) -> None:
        self.limit = limit
        self.scope = f"{scope}:{limit.capacity:g}:{limit.rate:g}"
        self._file: BucketStore
        if isinstance(path, str | os.PathLike):
            self._file = BucketFile(Path(path), timeout=timeout)
        else:
            self._file = path
        self.path = self._file.path
        self._clock = clock  # wall clock: it must mean the same in every process
        self._fallback = TokenBuckets(limit, clock=clock)
        self._takes = 0
        self._warned = False

    def take(self, key: str) -> float:
        """Take a token for ``key``: 0.0 if allowed, else the seconds until one is free."""
        self._takes += 1
        prune = (
            self.limit.capacity / self.limit.rate if self._takes % self.PRUNE_EVERY == 0 else None
        )
        try:
            return self._file.take(
                self.scope, key, self._clock, self.limit.refill, prune_older_than=prune
            )
        except BucketFileError as exc:
            if not self._warned:
                log.warning("rate limits: %s; limiting per process instead", exc)
                self._warned = True
            return self._fallback.take(key)


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
        store: Path | str | os.PathLike[str] | BucketStore | None = None,
        scope: str = "default",
    ) -> None:
        self.visitors: TokenBuckets | SharedTokenBuckets
        self.ips: TokenBuckets | SharedTokenBuckets
        if store is None:
            self.visitors = TokenBuckets(per_visitor)
            self.ips = TokenBuckets(per_ip)
        else:
            where = Path(store) if isinstance(store, str | os.PathLike) else store
            self.visitors = SharedTokenBuckets(per_visitor, where, f"{scope}/visitor")
            self.ips = SharedTokenBuckets(per_ip, where, f"{scope}/ip")

    def check(self, visitor: str | None, ip: str | None) -> int:
        """0 if allowed, else whole seconds to put in a Retry-After header."""
        from papersift.web.security import client_key

        wait = self.ips.take(f"ip:{client_key(ip or '-')}")
        if visitor:
            wait = max(wait, self.visitors.take(f"v:{visitor}"))
        return math.ceil(wait) if wait > 0 else 0


def store_path(home: Path | str) -> Path:
    """Where an app serving ``home`` keeps its shared rate-limit buckets."""
    return Path(home) / "ratelimit.sqlite"


# Votes: a burst of 20 then one every 3 s per visitor; an IP (a lab behind NAT) gets 5x that.
VOTE_LIMITS = (Limit(capacity=20, rate=1 / 3), Limit(capacity=100, rate=5 / 3))


class KeyLimiter:
    """One bucket per key (an address and a paper, a mail domain, ...), shared like the
    others: ``take`` answers 0 when allowed, else whole seconds to wait."""

    def __init__(self, limit: Limit, store: BucketStore | None, scope: str) -> None:
        self.buckets: TokenBuckets | SharedTokenBuckets = (
            TokenBuckets(limit) if store is None else SharedTokenBuckets(limit, store, scope)
        )

    def take(self, key: str) -> int:
        wait = self.buckets.take(key)
        return math.ceil(wait) if wait > 0 else 0


def per_day(count: int) -> Limit:
    """``count`` at once, refilled over a day."""
    return Limit(capacity=float(count), rate=count / 86400)


class ViewCounter:
    """Counts a paper view once per viewer, paper and day, in the database (every worker
    and host agrees), and at most ``cap`` a day per client address and paper, so new
    cookies from one address cannot add views. Viewers are stored as keyed hashes."""

    PRUNE_EVERY = 1000

    def __init__(
        self, secret: str = "", cap: KeyLimiter | None = None, *, redis_url: str | None = None
    ) -> None:
        import hashlib

        self._key = hashlib.sha256(f"papersift.views:{secret}".encode()).digest()
        self.cap = cap
        self._marks = 0
        self._redis: RedisViewMarks | None = None
        if redis_url:
            from papersift.store.buckets import RedisViewMarks

            self._redis = RedisViewMarks(redis_url)
        self._warned = False

    def _first_view(self, session: Session, day: date, viewer: str, paper_id: str) -> bool:
        """Mark (viewer, paper, day): in Redis when set (the database if it is away)."""
        if self._redis is not None:
            try:
                return self._redis.mark(day, viewer, paper_id)
            except BucketFileError as exc:
                if not self._warned:
                    log.warning("view marks: %s; using the database instead", exc)
                    self._warned = True
        return vote_store.mark_view(session, day, viewer, paper_id)

    def viewer_key(self, viewer: str) -> str:
        import hashlib

        return hashlib.blake2b(viewer.encode(), key=self._key, digest_size=16).hexdigest()

    def count(self, session: Session, viewer: str, client: str, paper_id: str) -> bool:
        """Count one view (True) unless this viewer saw the paper today or the address
        is past its daily cap for it."""
        day = datetime.now(UTC).date()
        if not self._first_view(session, day, self.viewer_key(viewer), paper_id):
            return False
        self._marks += 1
        if self._redis is None and self._marks % self.PRUNE_EVERY == 0:
            vote_store.prune_view_marks(session, day - timedelta(days=1))
        if self.cap is not None and self.cap.take(f"{client}|{paper_id}"):
            return False
        vote_store.add_view(session, paper_id, day)
        return True


@dataclass
class ClientViews:
    """The view counter for one request's client address (``web.deps``)."""

    counter: ViewCounter
    client: str

    def count(self, session: Session, viewer: str, paper_id: str) -> bool:
        return self.counter.count(session, viewer, self.client, paper_id)
