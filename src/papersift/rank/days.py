"""Days, ISO weeks and months as the daily pages name them, and their listings.

``2026-03-02`` is a day, ``2026-W10`` an ISO week (Monday to Sunday), ``2026-03`` a month.
Parsing is strict (four-digit years, zero-padded numbers, dates that exist, week 53 only
in years that have one) and a bad value raises :class:`BadPeriod` with a message a person
can act on. A listing holds a period's papers by votes, then newest first, with the
nearest periods before and after that have papers (empty ones skipped).
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Literal

from papersift.store import daily as daily_store
from papersift.store.db import Session

Kind = Literal["day", "week", "month"]
_DAY = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_WEEK = re.compile(r"([0-9]{4})-W([0-9]{2})")
_MONTH = re.compile(r"([0-9]{4})-([0-9]{2})")
MIN_YEAR = 1900  # nothing older is a paper papersift can hold


class BadPeriod(ValueError):
    """A day, week or month that is malformed or does not exist."""


@dataclass(frozen=True)
class Period:
    """A day, ISO week or month: its kind, first and last day, and its name in URLs."""

    kind: Kind
    start: date
    end: date

    @property
    def key(self) -> str:
        if self.kind == "day":
            return self.start.isoformat()
        if self.kind == "week":
            year, week, _ = self.start.isocalendar()
            return f"{year}-W{week:02d}"
        return f"{self.start.year}-{self.start.month:02d}"

    @property
    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]


def _year(text: str) -> int:
    year = int(text)
    if year < MIN_YEAR:
        raise BadPeriod(f"the year must be {MIN_YEAR} or later")
    return year


def day_period(day: date) -> Period:
    return Period("day", day, day)


def week_period(day: date) -> Period:
    """The ISO week (Monday to Sunday) that holds ``day``."""
    monday = day - timedelta(days=day.weekday())
    return Period("week", monday, monday + timedelta(days=6))


def month_period(day: date) -> Period:
    last = calendar.monthrange(day.year, day.month)[1]
    return Period("month", day.replace(day=1), day.replace(day=last))


def parse_day(raw: str | None) -> Period:
    """``YYYY-MM-DD`` as a day, or :class:`BadPeriod`."""
    match = _DAY.fullmatch((raw or "").strip())
    if not match:
        raise BadPeriod("a date looks like 2026-03-02 (YYYY-MM-DD)")
    year, month, day = _year(match[1]), int(match[2]), int(match[3])
    try:
        return day_period(date(year, month, day))
    except ValueError:
        raise BadPeriod(f"{match[0]} is not a date in the calendar") from None


def parse_week(raw: str | None) -> Period:
    """``YYYY-Www`` as an ISO week, or :class:`BadPeriod`."""
    match = _WEEK.fullmatch((raw or "").strip())
    if not match:
        raise BadPeriod("a week looks like 2026-W10 (ISO year, W, two-digit week)")
    year, week = _year(match[1]), int(match[2])
    weeks = date(year, 12, 28).isocalendar()[1]  # 28 December is always in the last week
    if not 1 <= week <= weeks:
        raise BadPeriod(f"{year} has ISO weeks 1 to {weeks}, not {week}")
    return week_period(date.fromisocalendar(year, week, 1))


def parse_month(raw: str | None) -> Period:
    """``YYYY-MM`` as a month, or :class:`BadPeriod`."""
    match = _MONTH.fullmatch((raw or "").strip())
    if not match:
        raise BadPeriod("a month looks like 2026-03 (YYYY-MM)")
    year, month = _year(match[1]), int(match[2])
    if not 1 <= month <= 12:
        raise BadPeriod(f"months run from 01 to 12, not {match[2]}")
    return month_period(date(year, month, 1))


PARSERS = {"day": parse_day, "week": parse_week, "month": parse_month}
OF_DAY = {"day": day_period, "week": week_period, "month": month_period}


@dataclass
class Listing:
    """A period's papers: (id, votes) by votes then newest first, one page of them."""

    period: Period
    items: list[tuple[str, int]]
    total: int
    offset: int
    previous: Period | None = None
    next: Period | None = None
    counts: dict[date, int] = field(default_factory=dict)  # papers per day, days with any


def listing(
    session: Session, period: Period, *, limit: int, offset: int = 0, counts: bool = False
) -> Listing:
    """One page of ``period``'s papers, its neighbours with papers, and (if asked) the
    number of papers of each of its days."""
    page = daily_store.papers_of_days(session, period.start, period.end, limit=limit, offset=offset)
    of_day = OF_DAY[period.kind]
    before = daily_store.previous_day(session, period.start)
    after = daily_store.next_day(session, period.end)
    return Listing(
        period,
        page.items,
        page.total,
        offset,
        previous=of_day(before) if before else None,
        next=of_day(after) if after else None,
        counts=daily_store.day_counts(session, period.start, period.end) if counts else {},
    )


def latest(session: Session) -> Period | None:
    """The newest day that has papers, or None for an empty library."""
    day = daily_store.latest_day(session)
    return day_period(day) if day else None
