"""Upvotes: one per visitor per paper, with undo. Visitor ids come from the web layer's
signed cookie; this module only trusts that they are short opaque strings."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from papersift.store.schema import PaperRow, VoteRow

MAX_VISITOR_ID = 64


class UnknownPaper(KeyError):
    """The paper to vote on does not exist."""


def _check(session: Session, paper_id: str, visitor_id: str) -> None:
    if not visitor_id or len(visitor_id) > MAX_VISITOR_ID:
        raise ValueError("invalid visitor id")
    if session.get(PaperRow, paper_id) is None:
        raise UnknownPaper(paper_id)


def upvote(session: Session, paper_id: str, visitor_id: str, now: datetime | None = None) -> bool:
    """Record the visitor's vote; False if they had already voted (nothing changes)."""
    _check(session, paper_id, visitor_id)
    if session.get(VoteRow, (paper_id, visitor_id)) is not None:
        return False
    try:
        with session.begin_nested():  # a concurrent duplicate loses on the primary key
            stamp = now or datetime.now(UTC)
            session.add(VoteRow(paper_id=paper_id, visitor_id=visitor_id, created_at=stamp))
    except IntegrityError:
        return False
    return True


def remove_vote(session: Session, paper_id: str, visitor_id: str) -> bool:
    """Undo the visitor's vote; False if there was none."""
    _check(session, paper_id, visitor_id)
    result = session.execute(
        delete(VoteRow).where(VoteRow.paper_id == paper_id, VoteRow.visitor_id == visitor_id)
    )
    return bool(result.rowcount)


def vote_count(session: Session, paper_id: str) -> int:
    return session.scalar(select(func.count()).where(VoteRow.paper_id == paper_id)) or 0


# Built once (see store.papers: composing a statement per call costs more than running it).
_IDS = bindparam("ids", expanding=True)
_COUNTS = (
    select(VoteRow.paper_id, func.count())
    .where(VoteRow.paper_id.in_(_IDS))
    .group_by(VoteRow.paper_id)
)
_VOTED = select(VoteRow.paper_id).where(
    VoteRow.visitor_id == bindparam("visitor"), VoteRow.paper_id.in_(_IDS)
)


def vote_counts(session: Session, paper_ids: Iterable[str]) -> dict[str, int]:
    """Votes per paper for a page of papers (papers without votes map to 0)."""
    ids = list(dict.fromkeys(paper_ids))
    out = dict.fromkeys(ids, 0)
    for i in range(0, len(ids), 500):
        out.update({pid: int(n) for pid, n in session.execute(_COUNTS, {"ids": ids[i : i + 500]})})
    return out


def voted_by(session: Session, visitor_id: str | None, paper_ids: Iterable[str]) -> set[str]:
    """The subset of ``paper_ids`` this visitor has upvoted."""
    ids = list(dict.fromkeys(paper_ids))
    if not visitor_id or not ids:
        return set()
    out: set[str] = set()
    for i in range(0, len(ids), 500):
        rows = session.execute(_VOTED, {"visitor": visitor_id, "ids": ids[i : i + 500]})
        out.update(pid for (pid,) in rows)
    return out
