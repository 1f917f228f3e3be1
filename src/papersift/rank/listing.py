"""Plain listings that are not search: newest papers first."""

from __future__ import annotations

from papersift.store import daily as daily_store
from papersift.store.db import Session


def newest(session: Session, *, limit: int = 20, offset: int = 0) -> list[str]:
    """Paper ids by date, newest first: the paper's day (``model.paper_day``: the day arXiv
    listed it, else its submission date, else the day it was first seen), then submission
    date, then arrival. Not the trending order, which puts activity first."""
    return daily_store.newest_by_day(session, limit, offset=offset)
