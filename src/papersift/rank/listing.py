"""Plain listings that are not search: newest papers first."""

from __future__ import annotations

from papersift.store import papers as paper_store
from papersift.store.db import Session


def newest(session: Session, *, limit: int = 20, offset: int = 0) -> list[str]:
    """Paper ids, most recently published first (undated papers by first-seen time after)."""
    return paper_store.newest_ids(session, limit, offset=offset)
