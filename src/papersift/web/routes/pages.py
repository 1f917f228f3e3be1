"""Server-rendered pages: home, paper, trending, collections, and the upvote form post."""

from __future__ import annotations

import math
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from papersift.comments import service as comment_service
from papersift.export import bibtex_key, to_bibtex
from papersift.model import Paper, normalize_arxiv_id, paper_day
from papersift.rank import days
from papersift.rank import votes as vote_store
from papersift.rank.trending import SIGNAL_NOTES
from papersift.store import collections as collection_store
from papersift.web.deps import (
    AccountDep,
    ClientIpDep,
    DbDep,
    PaperCacheDep,
    RenderDep,
    SearchDep,
    TrendingDep,
    ViewsDep,
    VisitorDep,
    VotingDep,
)
from papersift.web.resources import (
    Card,
    cards,
    check_window,
    collection_entries,
    count_view,
    load_collection,
    load_paper,
    load_paper_detail,
    page_number,
    trending_slice,
)
from papersift.web.routes.daily import period_url as daily_url
from papersift.web.searching import SearchUnavailable
from papersift.web.security import CSRF_FIELD, verify_csrf, visitor_id
from papersift.web.templating import paper_url, safe_url

router = APIRouter(include_in_schema=False)

HOME_LIST = 10
TRENDING_PAGE = 30
COLLECTION_PAGE = 50
SIMILAR = 5
WINDOW_LABELS = {"day": "Today", "week": "This week", "month": "This month"}


@router.get("/")
def home(
    render: RenderDep,
    db: DbDep,
    trending: TrendingDep,
    visitor: VisitorDep,
    window: str | None = None,
) -> Response:
    win = check_window(window)
    ranked = trending.ranked(win, HOME_LIST)
    with db.session() as session:
        trending_cards = cards(session, [i for i, _ in ranked.items], visitor, dict(ranked.items))
        latest = days.latest(session)
        listing = days.listing(session, latest, limit=HOME_LIST) if latest else None
        latest_cards = cards(session, [i for i, _ in listing.items], visitor) if listing else []
        collections = collection_store.collection_summaries(session)
    return render(
        "home.html",
        {
            "window": win,
            "windows": WINDOW_LABELS,
            "trending": trending_cards,
            "signal": ranked.signal,
            "signal_note": SIGNAL_NOTES[ranked.signal],
            "latest": listing,
            "latest_cards": latest_cards,
            "collections": collections,
        },
    )


@router.get("/trending")
def trending_page(
    render: RenderDep,
    db: DbDep,
    trending: TrendingDep,
    visitor: VisitorDep,
    window: str | None = None,
    page: str | None = None,
) -> Response:
    win = check_window(window)
    number = page_number(page, last=1000 // TRENDING_PAGE)
    start = (number - 1) * TRENDING_PAGE
    ranked, more = trending_slice(trending, win, start, TRENDING_PAGE)
    signal = trending.ranked(win, start + TRENDING_PAGE + 1).signal
    with db.session() as session:
        items = cards(session, [i for i, _ in ranked], visitor, dict(ranked))
    return render(
        "trending.html",
        {
            "window": win,
            "windows": WINDOW_LABELS,
            "items": items,
            "page": number,
            "more": more,
            "start": start,
            "signal": signal,
            "signal_note": SIGNAL_NOTES[signal],
        },
    )


@router.get("/collections")
def collections_page(render: RenderDep, db: DbDep) -> Response:
    with db.session() as session:
        rows = collection_store.collection_summaries(session)
    return render("collections.html", {"collections": rows})


@router.get("/collections/{name:path}")
def collection_page(
    render: RenderDep, db: DbDep, visitor: VisitorDep, name: str, page: str | None = None
) -> Response:
    with db.session() as session:
        found = load_collection(session, name)
        pages = max(1, math.ceil(found.size / COLLECTION_PAGE))
        number = page_number(page, last=pages)
        entries = collection_entries(found, (number - 1) * COLLECTION_PAGE, COLLECTION_PAGE)
        items = cards(session, [e.paper_id for e in entries], visitor)
    ranks = {e.paper_id: e.rank for e in entries}
    return render(
        "collection.html",
        {"collection": found, "items": items, "ranks": ranks, "page": number, "pages": pages},
    )


@router.get("/papers/{paper_id:path}/bibtex")
def paper_bibtex(db: DbDep, paper_id: str) -> Response:
    with db.session() as session:
        paper = load_paper(session, paper_id)
    return PlainTextResponse(
        to_bibtex(paper),
        media_type="application/x-bibtex; charset=utf-8",
        headers={
            "Content-Disposition": f'inline; filename="{bibtex_key(paper)}.bib"',
            "Cache-Control": "public, max-age=300",
        },
    )


@router.post("/papers/{paper_id:path}/upvote")
async def paper_upvote(request: Request, voting: VotingDep, paper_id: str) -> Response:
    """The upvote form (and, with Accept: application/json, the page's script)."""
    form = await request.form(max_files=0, max_fields=10)
    wants_json = "application/json" in request.headers.get("accept", "")
    token = form.get(CSRF_FIELD)
    if not verify_csrf(request, token if isinstance(token, str) else None):
        raise HTTPException(
            403,
            "This form has expired or did not come from this site; reload the page and try again.",
        )
    undo = form.get("undo") in ("1", "true", "on")
    visitor = visitor_id(request, create=True) or ""
    _, voted, count = await run_in_threadpool(voting.cast, visitor, paper_id, undo=undo)
    if wants_json:
        return JSONResponse({"votes": count, "voted": voted})
    back = form.get("next")
    return RedirectResponse(local_path(back) or paper_url(paper_id), status_code=303)


def local_path(value: object) -> str | None:
    """A path on this site to go back to after a form (never another host), or None."""
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 2000:
        return None
    if value.startswith("//") or "\\" in value or any(ord(c) < 32 for c in value):
        return None
    return value


ARXIV_HTML_FROM = (2023, 12)  # arXiv renders HTML for papers submitted since December 2023


def paper_links(paper: Paper) -> list[tuple[str, str, str]]:
    """(label, URL, extra CSS class) of a paper's outside links: arXiv abstract, PDF and
    HTML, DOI, code; only http(s) URLs."""
    links: list[tuple[str, str, str]] = []
    arxiv = normalize_arxiv_id(paper.arxiv_id)
    abs_url = safe_url(paper.abs_url) if paper.abs_url else "#"
    pdf_url = safe_url(paper.pdf_url) if paper.pdf_url else "#"
    if arxiv:
        abs_url = abs_url if abs_url != "#" else f"https://arxiv.org/abs/{arxiv}"
        pdf_url = pdf_url if pdf_url != "#" else f"https://arxiv.org/pdf/{arxiv}"
    if abs_url != "#":
        links.append(("arXiv page" if arxiv else "Abstract page", abs_url, ""))
    if pdf_url != "#":
        links.append(("PDF", pdf_url, ""))
    if arxiv and "/" not in arxiv and (int(arxiv[:2]) + 2000, int(arxiv[2:4])) >= ARXIV_HTML_FROM:
        links.append(("HTML", f"https://arxiv.org/html/{arxiv}", ""))
    if paper.doi:
        links.append(("DOI", "https://doi.org/" + quote(paper.doi, safe="/:;()"), ""))
    if safe_url(paper.code_url) != "#":
        links.append(("Code", safe_url(paper.code_url), " code"))
    return links


@router.get("/papers/{paper_id:path}")
def paper_page(
    render: RenderDep,
    db: DbDep,
    search: SearchDep,
    paper_cache: PaperCacheDep,
    views: ViewsDep,
    visitor: VisitorDep,
    ip: ClientIpDep,
    account: AccountDep,
    paper_id: str,
) -> Response:
    with db.session() as session:
        found = load_paper_detail(session, paper_id)
        paper = found.paper
        if paper.id != paper_id:
            return RedirectResponse(paper_url(paper.id), status_code=301)
        voted = bool(vote_store.voted_by(session, visitor, [paper.id]))
        count_view(session, views, visitor or ip, paper.id)
    similar: list[Card] = []
    try:
        hits = search.similar(paper.id, SIMILAR) or []
    except SearchUnavailable:
        hits = []
    if hits:
        with db.session() as session:
            similar = cards(session, [h.paper_id for h in hits], visitor, cache=paper_cache)
    with db.session() as session:
        titles = collection_store.collection_titles(session, [n for n, _ in found.memberships])
        comments = comment_service.thread_of(session, paper.id, account)
    day = paper_day(paper)
    categories = list(dict.fromkeys([c for c in [paper.primary_category] if c] + paper.categories))
    return render(
        "paper.html",
        {
            "paper": paper,
            "votes": found.votes,
            "voted": voted,
            "memberships": [(n, titles.get(n, n), r) for n, r in found.memberships],
            "similar": similar,
            "comments": comments,
            "bibtex": to_bibtex(paper),
            "day": day,
            "categories": categories[:8],
            "links": paper_links(paper),
            "week_url": daily_url(days.week_period(day)) if day else None,
            "month_url": daily_url(days.month_period(day)) if day else None,
        },
    )
