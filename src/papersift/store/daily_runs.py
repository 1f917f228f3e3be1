"""The daily job's runs (``daily_runs``): one row per day, its steps' states, its owner.

Taking a run over is a compare-and-set on ``owner``, so two ``papersift daily`` processes
started at once cannot both run the day.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from papersift.store.schema_jobs import DailyRunRow

RUNNING, DONE, FAILED = "running", "done", "failed"


class RunTaken(Exception):
    """Another process created or took over this day's run first."""


def get(session: Session, day: date) -> DailyRunRow | None:
    return session.get(DailyRunRow, day, populate_existing=True)


def last_done_day(session: Session, before: date) -> date | None:
    """The latest day before ``before`` whose run finished."""
    query = select(func.max(DailyRunRow.day)).where(
        DailyRunRow.status == DONE, DailyRunRow.day < before
    )
    return session.scalar(query)


def create(session: Session, day: date, *, since: date | None, owner: str, now: datetime) -> None:
    """A new running row for ``day``; RunTaken if another process made it first."""
    session.add(
        DailyRunRow(
            day=day,
            status=RUNNING,
            since=since,
            owner=owner,
            heartbeat_at=now,
            started_at=now,
            steps={},
            warnings=[],
        )
    )
    try:
        session.flush()
    except IntegrityError as exc:
        raise RunTaken(str(day)) from exc


def take_over(
    session: Session, day: date, *, old_owner: str | None, owner: str, now: datetime
) -> bool:
    """Make ``owner`` the run's owner if it is still ``old_owner``'s (compare-and-set)."""
    result = session.execute(
        update(DailyRunRow)
        .where(
            DailyRunRow.day == day,
            DailyRunRow.owner.is_(None) if old_owner is None else DailyRunRow.owner == old_owner,
        )
        .values(owner=owner, heartbeat_at=now, status=RUNNING, error=None, finished_at=None)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


def save(session: Session, day: date, owner: str, **values: Any) -> bool:
    """Change the run's columns if ``owner`` still owns it; False if it was taken over."""
    result = session.execute(
        update(DailyRunRow)
        .where(DailyRunRow.day == day, DailyRunRow.owner == owner)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


def recent(session: Session, limit: int = 30) -> list[DailyRunRow]:
    """The latest runs, newest first."""
    return list(session.scalars(select(DailyRunRow).order_by(DailyRunRow.day.desc()).limit(limit)))
