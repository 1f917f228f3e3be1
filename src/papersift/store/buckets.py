"""Rate-limit token buckets in the library database, for PostgreSQL deployments: every
worker on every host takes from the same rows, so a limit means the same behind a load
balancer. One take is one short transaction that locks the bucket's row."""

from __future__ import annotations

from collections.abc import Callable

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
