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
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from papersift.store.web_state import BucketFile, BucketFileError

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


class SharedTokenBuckets:
    """Token buckets in a SQLite file, shared by every process that opens the same file.

    ``scope`` separates limiters sharing one file (votes, sign-ups). Buckets that have
    refilled completely are the same as absent ones, so they are pruned now and then.
    """

    PRUNE_EVERY = 1000  # takes between two prunings

    def __init__(
        self,
        limit: Limit,
        path: Path,
        scope: str,
        *,
        clock: Callable[[], float] = time.time,
        timeout: float = 2.0,
    ) -> None:
        self.limit = limit
        self.path = Path(path)
        self.scope = f"{scope}:{limit.capacity:g}:{limit.rate:g}"
        self._file = BucketFile(self.path, timeout=timeout)
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
        store: Path | str | os.PathLike[str] | None = None,
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
