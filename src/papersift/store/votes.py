"""Votes and page views: the queries behind upvotes and the trending score."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date, datetime
from typing import Any

from sqlalchemy import CursorResult, bindparam, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from papersift.store.schema import PaperViewRow, VoteRow
from papersift.store.schema_web import ViewMarkRow

_IN_CHUNK = 500


def add_vote(session: Session, paper_id: str, visitor_id: str, at: datetime) -> bool:
    """Insert the visitor's vote; False if it already exists (also when a concurrent
    request inserted it first: the primary key decides)."""
    if session.get(VoteRow, (paper_id, visitor_id)) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(VoteRow(paper_id=paper_id, visitor_id=visitor_id, created_at=at))
    except IntegrityError:
        return False
    return True


def delete_vote(session: Session, paper_id: str, visitor_id: str) -> bool:
    """Remove the visitor's vote; False if there was none."""
    result = session.execute(
        delete(VoteRow).where(VoteRow.paper_id == paper_id, VoteRow.visitor_id == visitor_id)
    )
    return bool(isinstance(result, CursorResult) and result.rowcount)


def votes_of(session: Session, voter: str) -> list[tuple[str, datetime]]:
    """(paper id, when) of every vote of one voter, oldest first (account export)."""
    stmt = (
        select(VoteRow.paper_id, VoteRow.created_at)
        .where(VoteRow.visitor_id == voter)
        .order_by(VoteRow.created_at)
    )
    return [(pid, at) for pid, at in session.execute(stmt)]


def move_votes(session: Session, from_voter: str, to_voter: str) -> int:
    """Give ``from_voter``'s votes to ``to_voter`` (a visitor's to the account that signed
    in): papers both voted for keep one vote. How many votes moved."""
    theirs = select(VoteRow.paper_id).where(VoteRow.visitor_id == to_voter)
    session.execute(
        delete(VoteRow).where(VoteRow.visitor_id == from_voter, VoteRow.paper_id.in_(theirs))
    )
    result = session.execute(
        update(VoteRow).where(VoteRow.visitor_id == from_voter).values(visitor_id=to_voter)
    )
    return int(result.rowcount) if isinstance(result, CursorResult) else 0


def vote_count(session: Session, paper_id: str) -> int:
    return session.scalar(select(func.count()).where(VoteRow.paper_id == paper_id)) or 0


# Built once (see store.papers: composing a statement per call costs more than running it).
_IDS: Any = bindparam("ids", expanding=True)
_COUNTS = (
    select(VoteRow.paper_id, func.count())
    .where(VoteRow.paper_id.in_(_IDS))
    .group_by(VoteRow.paper_id)
)
_VOTED = select(VoteRow.paper_id).where(
    VoteRow.visitor_id == bindparam("visitor"), VoteRow.paper_id.in_(_IDS)
)


def vote_counts(session: Session, paper_ids: Iterable[str]) -> dict[str, int]:
    """Votes per paper (papers without votes map to 0)."""
    ids = list(dict.fromkeys(paper_ids))
    out = dict.fromkeys(ids, 0)
    for i in range(0, len(ids), _IN_CHUNK):
        chunk = ids[i : i + _IN_CHUNK]
        out.update({pid: int(n) for pid, n in session.execute(_COUNTS, {"ids": chunk})})
    return out


def voted_by(session: Session, visitor_id: str, paper_ids: Iterable[str]) -> set[str]:
    """The subset of ``paper_ids`` this visitor has voted for."""
    ids = list(dict.fromkeys(paper_ids))
    out: set[str] = set()
    for i in range(0, len(ids), _IN_CHUNK):
        rows = session.execute(_VOTED, {"visitor": visitor_id, "ids": ids[i : i + _IN_CHUNK]})
        out.update(pid for (pid,) in rows)
    return out


def votes_since(session: Session, since: datetime) -> dict[str, int]:
    """Votes per paper cast at or after ``since`` (papers with none are absent)."""
    stmt = (
        select(VoteRow.paper_id, func.count())
        .where(VoteRow.created_at >= since)
        .group_by(VoteRow.paper_id)
    )
    return {pid: int(n) for pid, n in session.execute(stmt)}


def views_since(session: Session, since: date) -> dict[str, int]:
    """Views per paper on ``since`` and later days (papers with none are absent)."""
    stmt = (
        select(PaperViewRow.paper_id, func.sum(PaperViewRow.count))
        .where(PaperViewRow.day >= since)
        .group_by(PaperViewRow.paper_id)
    )
    return {pid: int(n or 0) for pid, n in session.execute(stmt)}


def add_view(session: Session, paper_id: str, day: date) -> None:
    """Count one view of a paper on a day: an upsert, safe against concurrent viewers."""
    dialect = session.get_bind().dialect.name
    upsert = _UPSERTS.get(dialect)
    if upsert is not None:
        stmt = upsert(PaperViewRow).values(paper_id=paper_id, day=day, count=1)
        session.execute(
            stmt.on_conflict_do_update(
                index_elements=[PaperViewRow.paper_id, PaperViewRow.day],
                set_={"count": PaperViewRow.count + 1},
            )
        )
        return
    result = session.execute(
        update(PaperViewRow)
        .where(PaperViewRow.paper_id == paper_id, PaperViewRow.day == day)
        .values(count=PaperViewRow.count + 1)
    )
    if not (isinstance(result, CursorResult) and result.rowcount):
        session.add(PaperViewRow(paper_id=paper_id, day=day, count=1))
        session.flush()


def mark_view(session: Session, day: date, viewer: str, paper_id: str) -> bool:
    """Record that ``viewer`` saw the paper on ``day``; False if it already had (the view
    is then not counted again). An insert that does nothing on conflict, race-safe."""
    dialect = session.get_bind().dialect.name
    upsert = _UPSERTS.get(dialect)
    if upsert is not None:
        stmt = upsert(ViewMarkRow).values(day=day, viewer=viewer, paper_id=paper_id)
        result = session.execute(stmt.on_conflict_do_nothing())
        return bool(isinstance(result, CursorResult) and result.rowcount)
    if session.get(ViewMarkRow, (day, viewer, paper_id)) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(ViewMarkRow(day=day, viewer=viewer, paper_id=paper_id))
    except IntegrityError:
        return False
    return True


def prune_view_marks(session: Session, before: date) -> int:
    """Forget which viewers saw what before ``before``; rows removed."""
    result = session.execute(delete(ViewMarkRow).where(ViewMarkRow.day < before))
    return int(result.rowcount) if isinstance(result, CursorResult) else 0


# INSERT ... ON CONFLICT DO UPDATE, where the dialect has it (both spell it alike).
_UPSERTS: dict[str, Callable[..., Any]] = {
    "sqlite": sqlite.insert,
    "postgresql": postgresql.insert,
}
