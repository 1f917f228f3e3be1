"""Plain listings that are not search: newest papers first."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from papersift.store.schema import PaperRow


def newest(session: Session, *, limit: int = 20, offset: int = 0) -> list[str]:
    """Paper ids, most recently published first (undated papers by first-seen time after)."""
    stmt = (
        select(PaperRow.id)
        .order_by(PaperRow.published.desc().nulls_last(), PaperRow.first_seen.desc(), PaperRow.id)
        .offset(offset)
        .limit(limit)
    )
    return list(session.scalars(stmt))
