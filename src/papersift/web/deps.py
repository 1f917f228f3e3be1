"""Helpers shared by the routers: app services, the visitor, votes, view counting."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import Request
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException

from papersift.model import Paper
from papersift.rank import trending as trending_mod
from papersift.rank import votes as vote_store
from papersift.settings import Settings
from papersift.store import papers as paper_store
from papersift.store.db import Database
from papersift.web.searching import ResultCache
from papersift.web.security import visitor_id

MAX_ID = 255  # ids, names and other path values longer than this cannot exist


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def db_of(request: Request) -> Database:
    return request.app.state.db


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "-"


def clean_ref(value: str) -> str | None:
    """A path value that could name something, or None (too long, control characters)."""
    value = value.strip()
    if not value or len(value) > MAX_ID or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return None
    return value


def load_paper(session: Session, ref: str) -> Paper:
    """The paper for an id, arXiv id or DOI, or a 404."""
    cleaned = clean_ref(ref)
    paper = paper_store.get_paper(session, cleaned) if cleaned else None
    if paper is None:
        raise HTTPException(404, "No paper with this id.")
    return paper


@dataclass
class Card:
    """A paper as a list item shows it."""

    paper: Paper
    votes: int = 0
    voted: bool = False
    score: float | None = None


def paper_cache(request: Request) -> ResultCache | None:
    return getattr(request.app.state, "paper_cache", None)


def papers_by_id(
    session: Session, ids: list[str], cache: ResultCache | None = None
) -> dict[str, Paper]:
    """Papers for list pages, through ``cache`` when given (missing ids are absent).

    Lists (search results, similar papers) show the same popular papers again and again;
    reading them costs more than the search on a small corpus. A cached paper is at most
    the cache's ttl old, like the cached search results that name it; paper pages always
    read the database.
    """
    if cache is None:
        return paper_store.get_papers(session, ids)
    found: dict[str, Paper] = {}
    missing = []
    for paper_id in ids:
        paper = cache.get(("paper", paper_id))
        if paper is None:
            missing.append(paper_id)
        else:
            found[paper_id] = paper
    if missing:
        for paper_id, paper in paper_store.get_papers(session, missing).items():
            cache.put(("paper", paper_id), paper)
            found[paper_id] = paper
    return found


def cards(
    session: Session,
    ids: list[str],
    visitor: str | None,
    scores: dict[str, float] | None = None,
    *,
    cache: ResultCache | None = None,
) -> list[Card]:
    """Cards for ids in their order (unknown ids dropped); vote counts are always fresh."""
    papers = papers_by_id(session, ids, cache)
    counts = vote_store.vote_counts(session, list(papers))
    mine = vote_store.voted_by(session, visitor, list(papers))
    return [
        Card(papers[i], counts.get(i, 0), i in mine, (scores or {}).get(i))
        for i in ids
        if i in papers
    ]


def cast_vote(request: Request, paper_id: str, *, undo: bool) -> tuple[bool, int]:
    """Vote (or undo) as this request's visitor, rate limited; returns (voted, count)."""
    visitor = visitor_id(request, create=True)
    wait = request.app.state.vote_limiter.check(visitor, client_ip(request))
    if wait:
        raise HTTPException(
            429, "Too many votes; try again shortly.", headers={"Retry-After": str(wait)}
        )
    with db_of(request).session() as session:
        paper = load_paper(session, paper_id)
        if undo:
            vote_store.remove_vote(session, paper.id, visitor)
        else:
            vote_store.upvote(session, paper.id, visitor)
        count = vote_store.vote_count(session, paper.id)
    request.app.state.trending.invalidate()
    return (not undo, count)


class ViewCounter:
    """Counts a paper view at most once per viewer, paper and day (in-process memory)."""

    def __init__(self, max_keys: int = 50_000) -> None:
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._lock = threading.Lock()
        self.max_keys = max_keys

    def first_view(self, viewer: str, paper_id: str) -> bool:
        key = (viewer, paper_id, datetime.now(UTC).date().isoformat())
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
        return True


def count_view(request: Request, session: Session, paper_id: str) -> None:
    viewer = visitor_id(request, create=False) or client_ip(request)
    if request.app.state.views.first_view(viewer, paper_id):
        trending_mod.record_view(session, paper_id)
