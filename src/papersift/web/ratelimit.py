"""In-process token buckets for write endpoints (votes, subscriptions).

Each key (a visitor id or a client IP) owns a bucket of ``capacity`` tokens refilled at
``rate`` tokens per second; a request takes one token or is refused with the seconds to
wait. State lives in the serving process: with ``--workers N`` every worker keeps its own
buckets, so the effective limit is up to N times the configured one. That is enough to
stop a script hammering the vote button; a shared store (e.g. Redis) would be the next
step for a multi-host deployment. Memory is bounded: the least recently used buckets are
dropped beyond ``max_keys`` (a dropped bucket simply starts full again).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass


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


class RateLimiter:
    """Per-visitor and per-IP limits checked together (both must allow the request)."""

    def __init__(self, per_visitor: Limit, per_ip: Limit) -> None:
        self.visitors = TokenBuckets(per_visitor)
        self.ips = TokenBuckets(per_ip)

    def check(self, visitor: str | None, ip: str | None) -> int:
        """0 if allowed, else whole seconds to put in a Retry-After header."""
        wait = self.ips.take(f"ip:{ip or '-'}")
        if visitor:
            wait = max(wait, self.visitors.take(f"v:{visitor}"))
        return math.ceil(wait) if wait > 0 else 0


# Votes: a burst of 20 then one every 3 s per visitor; an IP (a lab behind NAT) gets 5x that.
VOTE_LIMITS = (Limit(capacity=20, rate=1 / 3), Limit(capacity=100, rate=5 / 3))
