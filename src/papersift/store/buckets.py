"""Rate-limit token buckets shared by every host: in the library database (PostgreSQL
deployments: every worker on every host takes from the same rows, one take is one short
transaction that locks the bucket's row), or in Redis when ``redis_url`` is set (also the
view de-duplication marks, :class:`RedisViewMarks`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import SQLAlchemyError

from papersift.store.db import Database
from papersift.store.schema_web import RateBucketRow
from papersift.store.web_state import BucketFileError, Refill


class DbBuckets:
    """The same interface as :class:`~papersift.store.web_state.BucketFile`, in the
    database (``rate_buckets``)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.path = db.engine.url.render_as_string(hide_password=True)

    def take(
        self,
        scope: str,
        key: str,
        clock: Callable[[], float],
        refill: Refill,
        *,
        prune_older_than: float | None = None,
    ) -> float:
        """Apply ``refill(stored, now)`` to one bucket under its row lock; the wait."""
        try:
            with self.db.session() as s:
                if s.get_bind().dialect.name == "postgresql":
                    s.execute(
                        postgresql.insert(RateBucketRow)
                        .values(scope=scope, key=key, tokens=-1.0, at=0.0)
                        .on_conflict_do_nothing()
                    )
                row = s.execute(
                    select(RateBucketRow)
                    .where(RateBucketRow.scope == scope, RateBucketRow.key == key)
                    .with_for_update()
                ).scalar_one_or_none()
                now = clock()
                stored = (row.tokens, row.at) if row is not None and row.tokens >= 0 else None
                tokens, wait = refill(stored, now)
                if row is None:
                    s.add(RateBucketRow(scope=scope, key=key, tokens=tokens, at=now))
                else:
                    row.tokens, row.at = tokens, now
                if prune_older_than is not None:
                    s.execute(
                        delete(RateBucketRow).where(
                            RateBucketRow.scope == scope,
                            RateBucketRow.at < now - prune_older_than,
                            RateBucketRow.key != key,
                        )
                    )
            return wait
        except SQLAlchemyError as exc:
            raise BucketFileError(f"rate_buckets unusable ({type(exc).__name__})") from exc


# -- Redis (``redis_url``) ------------------------------------------------------------------
REDIS_TTL = 2 * 86400  # seconds a bucket or a view mark is kept: longer than any refill
REDIS_TIMEOUT = 0.5  # a Redis that does not answer this fast is treated as away
_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()


def redis_client(url: str) -> Any:
    """One client (and connection pool) per URL per process."""
    import redis

    with _CLIENTS_LOCK:
        client = _CLIENTS.get(url)
        if client is None:
            client = _CLIENTS[url] = redis.Redis.from_url(
                url, socket_timeout=REDIS_TIMEOUT, socket_connect_timeout=REDIS_TIMEOUT
            )
        return client


class RedisBuckets:
    """The same interface as :class:`DbBuckets`, in Redis: one hash per bucket, updated in
    an optimistic transaction (WATCH, then MULTI/EXEC; a concurrent change retries), so
    every worker on every host takes from the same bucket. Buckets expire after
    ``REDIS_TTL``: an absent bucket is a full one, so nothing needs pruning."""

    PREFIX = "papersift:bucket:"

    def __init__(self, url: str) -> None:
        self.client = redis_client(url)
        self.path = url.split("@")[-1]  # for messages: never the password

    def take(
        self,
        scope: str,
        key: str,
        clock: Callable[[], float],
        refill: Refill,
        *,
        prune_older_than: float | None = None,
    ) -> float:
        import redis

        name = f"{self.PREFIX}{scope}|{key}"

        def move(pipe: Any) -> float:
            found = pipe.hmget(name, "tokens", "at")
            stored = (float(found[0]), float(found[1])) if found[0] is not None else None
            now = clock()
            tokens, wait = refill(stored, now)
            pipe.multi()
            pipe.hset(name, mapping={"tokens": tokens, "at": now})
            pipe.expire(name, REDIS_TTL)
            return wait

        try:
            return float(self.client.transaction(move, name, value_from_callable=True))
        except redis.RedisError as exc:
            raise BucketFileError(f"Redis at {self.path} unusable ({type(exc).__name__})") from exc


class RedisViewMarks:
    """ "This viewer saw this paper today", in Redis (``SET NX`` with an expiry): the view
    de-duplication every host shares when ``redis_url`` is set. ``mark`` raises
    ``BucketFileError`` when Redis is away, so the caller can use the database instead."""

    PREFIX = "papersift:view:"

    def __init__(self, url: str) -> None:
        self.client = redis_client(url)
        self.path = url.split("@")[-1]

    def mark(self, day: date, viewer: str, paper_id: str) -> bool:
        """True the first time (viewer, paper) is marked on ``day``."""
        import redis

        try:
            return bool(
                self.client.set(
                    f"{self.PREFIX}{day.isoformat()}|{viewer}|{paper_id}", 1, nx=True, ex=REDIS_TTL
                )
            )
        except redis.RedisError as exc:
            raise BucketFileError(f"Redis at {self.path} unusable ({type(exc).__name__})") from exc
