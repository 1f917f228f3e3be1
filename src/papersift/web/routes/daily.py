"""The daily pages and their JSON: a day's, an ISO week's or a month's papers by votes.

Pages: ``/papers/date/YYYY-MM-DD``, ``/papers/week/YYYY-Www``, ``/papers/month/YYYY-MM``
(and ``/papers/date?date=...``, the date picker's target). API: ``/api/v1/daily?date=``,
``/api/v1/daily/week?week=``, ``/api/v1/daily/month?month=``; each item has the fields a
client of the public daily-papers API reads (id, title, summary, authors as ``{name}``,
publishedAt, upvotes, githubRepo) besides ours. A malformed or impossible period is a 400
that says what a good one looks like.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response

from papersift.model import Paper, paper_day
from papersift.rank import days
from papersift.rank.days import BadPeriod, Kind, Listing, Period
from papersift.store.db import Database
from papersift.web import schemas
from papersift.web.caching import REVALIDATE, CachedRoute, cache_control, in_threadpool
from papersift.web.deps import DbDep, PaperCacheDep, RenderDep, VisitorDep
from papersift.web.resources import cards, next_page, page_number, papers_by_id, start_of
from papersift.web.routes.api import OFFSET, PAGE, K
from papersift.web.searching import ResultCache

router = APIRouter(include_in_schema=False)
api_router = APIRouter(prefix="/api/v1", tags=["daily"], route_class=CachedRoute)

DAY_PAGE = 50  # papers per HTML page
MAX_PAGES = 1000
PATHS: dict[Kind, str] = {
    "day": "/papers/date/",
    "week": "/papers/week/",
    "month": "/papers/month/",
}
LABELS: dict[Kind, str] = {"day": "date", "week": "week", "month": "month"}


def period_url(period: Period) -> str:
    return PATHS[period.kind] + period.key


def parse(kind: Kind, raw: str | None) -> Period:
    """The period a URL or query value names, or a 400 that says what one looks like."""
    try:
        return days.PARSERS[kind](raw)
    except BadPeriod as exc:
        raise HTTPException(400, f"Not a valid {LABELS[kind]}: {exc}.") from None


def period_title(period: Period) -> str:
    if period.kind == "day":
        return period.start.strftime("%A, %-d %B %Y")
    if period.kind == "week":
        year, week, _ = period.start.isocalendar()
        return (
            f"Week {week} of {year} ({period.start.strftime('%-d %b')} – "
            f"{period.end.strftime('%-d %b %Y')})"
        )
    return period.start.strftime("%B %Y")


def short_label(period: Period) -> str:
    """A period's name on a previous/next button: "28 Feb", "Week 9", "Feb 2026"."""
    if period.kind == "day":
        return period.start.strftime("%a %-d %b")
    if period.kind == "week":
        return f"Week {period.start.isocalendar()[1]}"
    return period.start.strftime("%b %Y")


def month_grid(period: Period, counts: dict[date, int]) -> list[list[tuple[date, int, bool]]]:
    """The weeks of a month for a calendar: (day, papers, in this month), Monday first."""
    weeks = calendar.Calendar().monthdatescalendar(period.start.year, period.start.month)
    return [[(d, counts.get(d, 0), d.month == period.start.month) for d in week] for week in weeks]


def _show(
    render: RenderDep, db: DbDep, visitor: VisitorDep, period: Period, page: str | None
) -> Response:
    number = page_number(page, last=MAX_PAGES)
    with db.session() as session:
        found = days.listing(
            session,
            period,
            limit=DAY_PAGE,
            offset=(number - 1) * DAY_PAGE,
            counts=period.kind != "day",
        )
        items = cards(session, [pid for pid, _ in found.items], visitor)
    pages = max(1, -(-found.total // DAY_PAGE))
    if number > pages:
        raise HTTPException(400, f"page must be within range: this {period.kind} has {pages}")
    context: dict[str, Any] = {
        "period": period,
        "title": period_title(period),
        "listing": found,
        "items": items,
        "page": number,
        "pages": pages,
        "start": (number - 1) * DAY_PAGE,
        "day_url": PATHS["day"] + period.start.isoformat(),
        "week_url": period_url(days.week_period(period.start)),
        "month_url": period_url(days.month_period(period.start)),
        "previous_url": period_url(found.previous) if found.previous else None,
        "next_url": period_url(found.next) if found.next else None,
        "previous_label": short_label(found.previous) if found.previous else "",
        "next_label": short_label(found.next) if found.next else "",
        "grid": month_grid(period, found.counts) if period.kind == "month" else None,
    }
    return render("daily.html", context)


def latest_or_today(db: DbDep, kind: Kind) -> Period:
    """The period of the latest day with papers (of today in an empty library)."""
    with db.session() as session:
        newest = days.latest(session)
    day = newest.start if newest else datetime.now(UTC).date()
    return days.OF_DAY[kind](day)


def _add_pages(kind: Kind) -> None:
    """A period kind's page and its picker (the query value's page, or the latest)."""
    label = LABELS[kind]

    def pick(db: DbDep, raw: str | None = Query(None, alias=label)) -> Response:
        period = parse(kind, raw) if raw else latest_or_today(db, kind)
        return RedirectResponse(period_url(period), status_code=303)

    def show(
        render: RenderDep, db: DbDep, visitor: VisitorDep, key: str, page: str | None = None
    ) -> Response:
        return _show(render, db, visitor, parse(kind, key), page)

    pick.__doc__ = f"The {kind} page of ``{label}``, or of the latest day with papers."
    router.add_api_route(PATHS[kind].rstrip("/"), pick, methods=["GET"], name=f"pick_{kind}")
    router.add_api_route(PATHS[kind] + "{key}", show, methods=["GET"], name=f"{kind}_page")


for _kind in PATHS:
    _add_pages(_kind)


# --- JSON ------------------------------------------------------------------------------


class Author(BaseModel):
    name: str


class DailyPaper(BaseModel):
    """One paper of a daily listing."""

    id: str
    title: str
    summary: str = Field(description="the abstract")
    authors: list[Author]
    published: str | None = Field(None, description="ISO date of submission")
    # camelCase as the public daily-papers API spells them
    publishedAt: str | None = Field(
        None, description="ISO timestamp of the paper's day (midnight UTC)"
    )
    upvotes: int
    githubRepo: str | None = Field(None, description="the first GitHub link, if any")
    code_url: str | None = Field(None, description="the first code link of any host")
    day: str | None = Field(None, description="ISO date of the paper's day")
    announced: str | None = Field(None, description="ISO date arXiv listed it")
    arxiv_id: str | None = None
    doi: str | None = None
    categories: list[str]
    primary_category: str | None = None
    comment: str | None = None
    abs_url: str | None = None
    pdf_url: str | None = None
    url: str = Field(description="the paper's page on this server")


class DailyOut(BaseModel):
    period: str = Field(description="day, week or month")
    key: str = Field(description="the period as its URL names it, e.g. 2026-03-02")
    start: str = Field(description="ISO date of its first day")
    end: str = Field(description="ISO date of its last day")
    total: int
    offset: int
    k: int
    previous: str | None = Field(None, description="the nearest earlier period with papers")
    following: str | None = Field(None, description="the nearest later period with papers")
    days: dict[str, int] = Field(
        default_factory=dict, description="papers per day (week and month; days with any)"
    )
    results: list[DailyPaper]
    next: str | None = Field(None, description="URL of the next page, if any")


def _github(paper: Paper) -> str | None:
    for url in paper.code_urls:
        if url.lower().startswith(("https://github.com/", "http://github.com/")):
            return url
    return None


def daily_paper(paper: Paper, votes: int) -> DailyPaper:
    day = paper_day(paper)
    fields = schemas.paper_fields(paper, votes)
    return DailyPaper(
        id=paper.id,
        title=paper.title,
        summary=paper.abstract,
        authors=[Author(name=n) for n in paper.authors],
        published=paper.published.isoformat() if paper.published else None,
        publishedAt=(
            datetime.combine(day, time(), tzinfo=UTC).isoformat().replace("+00:00", "Z")
            if day
            else None
        ),
        upvotes=votes,
        githubRepo=_github(paper),
        code_url=paper.code_url,
        day=day.isoformat() if day else None,
        announced=fields["announced"],
        arxiv_id=paper.arxiv_id,
        doi=paper.doi,
        categories=list(paper.categories),
        primary_category=paper.primary_category,
        comment=paper.comment,
        abs_url=paper.abs_url,
        pdf_url=paper.pdf_url,
        url=fields["url"],
    )


@dataclass(frozen=True)
class DailyPage:
    """One page of a daily listing as asked for, whatever its period."""

    request: Request
    db: Database
    cache: ResultCache
    k: int
    start: int

    def answer(self, kind: Kind, raw: str | None) -> DailyOut:
        """The page for the period ``raw`` names (the latest one when absent), or a 400."""
        period = parse(kind, raw) if raw is not None else latest_or_today(self.db, kind)
        with self.db.session() as session:
            found: Listing = days.listing(
                session, period, limit=self.k, offset=self.start, counts=period.kind != "day"
            )
            papers = papers_by_id(session, [pid for pid, _ in found.items], self.cache)
        return DailyOut(
            period=period.kind,
            key=period.key,
            start=period.start.isoformat(),
            end=period.end.isoformat(),
            total=found.total,
            offset=self.start,
            k=self.k,
            previous=found.previous.key if found.previous else None,
            following=found.next.key if found.next else None,
            days={d.isoformat(): n for d, n in sorted(found.counts.items())},
            results=[daily_paper(papers[pid], n) for pid, n in found.items if pid in papers],
            next=next_page(self.request, self.start, self.k, found.total),
        )


async def daily_page(
    request: Request,
    db: DbDep,
    cache: PaperCacheDep,
    k: K = 50,
    offset: OFFSET = 0,
    page: PAGE = None,
) -> DailyPage:
    return DailyPage(request, db, cache, k, start_of(offset, k, page))


DailyDep = Annotated[DailyPage, Depends(daily_page)]


# kind: (path, the query's pattern, the query's description, the operation's description)
API: dict[Kind, tuple[str, str, str, str]] = {
    "day": (
        "/daily",
        r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$",
        "YYYY-MM-DD; the latest day with papers when absent",
        "A day's papers by upvotes, then newest first (the day arXiv listed them).",
    ),
    "week": (
        "/daily/week",
        r"^[0-9]{4}-W[0-9]{2}$",
        "ISO week, YYYY-Www; the latest week with papers when absent",
        "An ISO week's papers (Monday to Sunday) by upvotes, then newest first.",
    ),
    "month": (
        "/daily/month",
        r"^[0-9]{4}-[0-9]{2}$",
        "YYYY-MM; the latest month with papers when absent",
        "A month's papers by upvotes, then newest first.",
    ),
}


def _add_api(kind: Kind) -> None:
    """The JSON route of a period kind: ``/daily`` for days, ``/daily/<kind>`` otherwise."""
    path, pattern, described, doc = API[kind]

    def answer(
        daily: DailyDep,
        raw: str | None = Query(None, alias=LABELS[kind], pattern=pattern, description=described),
    ) -> DailyOut:
        return daily.answer(kind, raw)

    answer.__doc__ = doc
    api_router.add_api_route(
        path,
        in_threadpool(answer),
        methods=["GET"],
        name="api_" + path.strip("/").replace("/", "_"),
        response_model=DailyOut,
        responses=schemas.problem_responses(400, 422),
        dependencies=[cache_control(REVALIDATE)],
    )


for _kind in API:
    _add_api(_kind)
