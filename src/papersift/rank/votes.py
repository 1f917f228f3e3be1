"""Upvotes: one per visitor per paper, with undo. Visitor ids come from the web layer's
signed cookie; this module only trusts that they are short opaque strings."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from papersift.store import papers as paper_store
from papersift.store import votes as vote_store
from papersift.store.db import Session

MAX_VISITOR_ID = 64


class UnknownPaper(KeyError):
    """The paper to vote on does not exist."""


def _check(session: Session, paper_id: str, visitor_id: str) -> None:
    if not visitor_id or len(visitor_id) > MAX_VISITOR_ID:
        raise ValueError("invalid visitor id")
    if not paper_store.paper_exists(session, paper_id):
        raise UnknownPaper(paper_id)


def upvote(session: Session, paper_id: str, visitor_id: str, now: datetime | None = None) -> bool:
    """Record the visitor's vote; False if they had already voted (nothing changes)."""
    _check(session, paper_id, visitor_id)
    return vote_store.add_vote(session, paper_id, visitor_id, now or datetime.now(UTC))


def remove_vote(session: Session, paper_id: str, visitor_id: str) -> bool:
    """Undo the visitor's vote; False if there was none."""
    _check(session, paper_id, visitor_id)
    return vote_store.delete_vote(session, paper_id, visitor_id)


def vote_count(session: Session, paper_id: str) -> int:
    return vote_store.vote_count(session, paper_id)


def vote_counts(session: Session, paper_ids: Iterable[str]) -> dict[str, int]:
    """Votes per paper for a page of papers (papers without votes map to 0)."""
    return vote_store.vote_counts(session, paper_ids)


def voted_by(session: Session, visitor_id: str | None, paper_ids: Iterable[str]) -> set[str]:
    """The subset of ``paper_ids`` this visitor has upvoted."""
    ids = list(dict.fromkeys(paper_ids))
    if not visitor_id or not ids:
        return set()
    return vote_store.voted_by(session, visitor_id, ids)
