"""Server-rendered pages: home, paper, trending, collections, and the upvote form post."""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from papersift.export import bibtex_key, to_bibtex
from papersift.rank import votes as vote_store
from papersift.rank.listing import newest
from papersift.rank.trending import WINDOWS
from papersift.store import collections as collection_store
from papersift.web.deps import (
    cards,
    cast_vote,
    clean_ref,
    count_view,
    db_of,
    load_paper,
    paper_cache,
)
from papersift.web.searching import SearchUnavailable, similar_papers
from papersift.web.security import CSRF_FIELD, verify_csrf, visitor_id
from papersift.web.templating import paper_url

router = APIRouter(include_in_schema=False)

HOME_LIST = 10
TRENDING_PAGE = 30
COLLECTION_PAGE = 50
PAGE_CACHE = "private, no-cache"
WINDOW_LABELS = {"day": "Today", "week": "This week", "month": "This month"}


def render(request: Request, name: str, context: dict, status_code: int = 200) -> Response:
    response = request.app.state.templates.TemplateResponse(
        request, name, context, status_code=status_code
    )
    response.headers["Cache-Control"] = PAGE_CACHE
    return response


def _window(raw: str | None) -> str:
    if raw in WINDOWS:
        return raw
    if raw:
        raise HTTPException(400, "window must be day, week or month")
    return "day"


def _page(raw: str | None, last: int = 10_000) -> int:
    if raw is None or raw == "":
        return 1
    if raw.isdigit() and 1 <= int(raw) <= last:
        return int(raw)
    raise HTTPException(400, "page must be a positive number within range")


@router.get("/")
def home(request: Request, window: str | None = None) -> Response:
    win = _window(window)
    visitor = visitor_id(request, create=False)
    ranked = request.app.state.trending.get(win, HOME_LIST)
    with db_of(request).session() as session:
        trending_cards = cards(session, [i for i, _ in ranked], visitor, dict(ranked))
        newest_cards = cards(session, newest(session, limit=HOME_LIST), visitor)
        collections = collection_store.collection_sizes(session)
    return render(
        request,
        "home.html",
        {
            "window": win,
            "windows": WINDOW_LABELS,
            "trending": trending_cards,
            "newest": newest_cards,
            "collections": collections,
        },
    )


@router.get("/trending")
def trending_page(request: Request, window: str | None = None, page: str | None = None) -> Response:
    win = _window(window)
    number = _page(page, last=1000 // TRENDING_PAGE)
    start = (number - 1) * TRENDING_PAGE
    ranked = request.app.state.trending.get(win, start + TRENDING_PAGE + 1)
    more = len(ranked) > start + TRENDING_PAGE
    ranked = ranked[start : start + TRENDING_PAGE]
    with db_of(request).session() as session:
        items = cards(
            session, [i for i, _ in ranked], visitor_id(request, create=False), dict(ranked)
        )
    return render(
        request,
        "trending.html",
        {
            "window": win,
            "windows": WINDOW_LABELS,
            "items": items,
            "page": number,
            "more": more,
            "start": start,
        },
    )


@router.get("/collections")
def collections_page(request: Request) -> Response:
    with db_of(request).session() as session:
        rows = collection_store.collection_sizes(session)
    return render(request, "collections.html", {"collections": rows})


@router.get("/collections/{name:path}")
def collection_page(request: Request, name: str, page: str | None = None) -> Response:
    cleaned = clean_ref(name)
    with db_of(request).session() as session:
        found = collection_store.get_collection(session, cleaned) if cleaned else None
        if found is None:
            raise HTTPException(404, "No collection with this name.")
        pages = max(1, math.ceil(found.size / COLLECTION_PAGE))
        number = _page(page, last=pages)
        entries = found.entries[(number - 1) * COLLECTION_PAGE : number * COLLECTION_PAGE]
        items = cards(session, [e.paper_id for e in entries], visitor_id(request, create=False))
    ranks = {e.paper_id: e.rank for e in entries}
    return render(
        request,
        "collection.html",
        {
            "collection": found,
            "items": items,
            "ranks": ranks,
            "page": number,
            "pages": pages,
        },
    )


@router.get("/papers/{paper_id:path}/bibtex")
def paper_bibtex(request: Request, paper_id: str) -> Response:
    with db_of(request).session() as session:
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
async def paper_upvote(request: Request, paper_id: str) -> Response:
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
    from starlette.concurrency import run_in_threadpool

    voted, count = await run_in_threadpool(cast_vote, request, paper_id, undo=undo)
    if wants_json:
        return JSONResponse({"votes": count, "voted": voted})
    return RedirectResponse(paper_url(paper_id), status_code=303)


@router.get("/papers/{paper_id:path}")
def paper_page(request: Request, paper_id: str) -> Response:
    visitor = visitor_id(request, create=False)
    with db_of(request).session() as session:
        paper = load_paper(session, paper_id)
        if paper.id != paper_id:
            return RedirectResponse(paper_url(paper.id), status_code=301)
        votes = vote_store.vote_count(session, paper.id)
        voted = bool(vote_store.voted_by(session, visitor, [paper.id]))
        memberships = collection_store.collections_of_paper(session, paper.id)
        count_view(request, session, paper.id)
    similar = []
    try:
        hits = similar_papers(request, paper.id, 5)
        with db_of(request).session() as session:
            similar = cards(
                session, [h.paper_id for h in hits], visitor, cache=paper_cache(request)
            )
    except (KeyError, SearchUnavailable):
        similar = []
    return render(
        request,
        "paper.html",
        {
            "paper": paper,
            "votes": votes,
            "voted": voted,
            "memberships": memberships,
            "similar": similar,
            "bibtex": to_bibtex(paper),
        },
    )
