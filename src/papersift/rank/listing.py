"""Plain listings that are not search: newest papers first."""

from __future__ import annotations

from papersift.store import papers as paper_store
from papersift.store.db import Session


def newest(session: Session, *, limit: int = 20, offset: int = 0) -> list[str]:
    """Paper ids by date, newest first: the paper's day (``model.paper_day``: the day arXiv
    listed it, else its submission date, else the day it was first seen), then submission
    date, then arrival. Not the trending order, which puts activity first."""
    return paper_store.newest_ids(session, limit, offset=offset)
