"""The search page: results with highlighted matches, filters, mode switch, pagination.

Bad parameters give the page back with the message and status 400; an empty query gives
the page with a hint (200); the search service's own message (e.g. "query simplified")
is shown above the results. Errors from the search itself (bad parameters, search
unavailable) reach the app's error handlers, which show them in this page's form.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from papersift.search import MODES, SORTS
from papersift.store import collections as collection_store
from papersift.store import papers as paper_store
from papersift.store.db import Database
from papersift.web.deps import (
    CacheDep,
    DbDep,
    PaperCacheDep,
    RenderDep,
    Renderer,
    SearchDep,
    VisitorDep,
)
from papersift.web.problems import show_search_errors_in
from papersift.web.resources import cards
from papersift.web.searching import MAX_PAGE, ResultCache, parse_params
from papersift.web.templating import paper_url, query_terms

router = APIRouter(include_in_schema=False)


def _collections(cache: ResultCache, db: Database) -> list[tuple[str, str]]:
    """(name, title) of the collections for the filter menu (counted over all entries:
    kept a while)."""

    def names() -> list[tuple[str, str]]:
        with db.session() as session:
            return [(c.name, c.title) for c in collection_store.collection_summaries(session)]

    return cache.through(("collection titles",), names)


def _has_dates(cache: ResultCache, db: Database) -> bool:
    """Whether date filters and date sorting can mean anything here (kept a while)."""

    def dated() -> bool:
        with db.session() as session:
            return paper_store.any_dated(session)

    return bool(cache.through(("any dated papers",), dated))


@router.get("/search")
async def search_page(
    request: Request,
    render: RenderDep,
    db: DbDep,
    search: SearchDep,
    cache: CacheDep,
    paper_cache: PaperCacheDep,
    visitor: VisitorDep,
) -> Response:
    params = parse_params(dict(request.query_params))
    context: dict[str, Any] = {
        "params": params,
        "query": params.as_query(),
        "modes": MODES,
        "sorts": SORTS,
        "collections": [],
        "items": [],
        "total": 0,
        "pages": 0,
        "message": None,
        "errors": list(params.errors),
        "terms": query_terms(params.q),
    }
    show_search_errors_in(
        request, lambda status, message: _failed(render, context, status, message)
    )

    def page() -> Response:
        context["collections"] = _collections(cache, db)
        context["has_dates"] = _has_dates(cache, db)
        if not context["has_dates"]:
            context["sorts"] = [s for s in SORTS if s != "date"]
        if params.errors:
            return render("search.html", context, status_code=400)
        if not params.q.strip():
            context["message"] = "Type a few words, a title or a question to search the papers."
            return render("search.html", context)
        results = search.run(params)
        if results.direct and params.page == 1:
            # A pasted arXiv id, DOI or paper link names one paper: go there.
            return RedirectResponse(paper_url(results.direct), status_code=303)
        scores = {h.paper_id: h.score for h in results.hits}
        with db.session() as session:
            items = cards(
                session, [h.paper_id for h in results.hits], visitor, scores, cache=paper_cache
            )
        context.update(
            items=items,
            total=results.total,
            more=results.more,
            message=results.message,
            suggestion=results.suggestion if not results.corrected else None,
            pages=min(MAX_PAGE, math.ceil(results.total / params.k)),
        )
        return render("search.html", context)

    return await run_in_threadpool(page)


def _failed(render: Renderer, context: dict[str, Any], status: int, message: str) -> Response:
    """The page with the search's error in place of results."""
    if status >= 500:
        message = f"{message.capitalize()}. Try again in a moment."
    return render("search.html", {**context, "errors": [message]}, status_code=status)
