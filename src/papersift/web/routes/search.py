"""The search page: results with highlighted matches, filters, mode switch, pagination.

Bad parameters give the page back with the message and status 400; an empty query gives
the page with a hint (200); the search service's own message (e.g. "query simplified")
is shown above the results.
"""

from __future__ import annotations

import math

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from papersift.store import collections as collection_store
from papersift.web.deps import cards, db_of, paper_cache
from papersift.web.routes.pages import render
from papersift.web.searching import (
    MAX_PAGE,
    MODES,
    SORTS,
    BadParams,
    SearchUnavailable,
    parse_params,
    run_search,
)
from papersift.web.security import visitor_id
from papersift.web.templating import query_terms

router = APIRouter(include_in_schema=False)


def _collections(request: Request) -> list[str]:
    """Collection names for the filter menu (counted over all entries: kept a while)."""
    cache = getattr(request.app.state, "search_cache", None)
    if cache is not None and (names := cache.get(("collection names",))) is not None:
        return names
    with db_of(request).session() as session:
        names = [name for name, _, _ in collection_store.collection_sizes(session)]
    if cache is not None:
        cache.put(("collection names",), names)
    return names


@router.get("/search")
async def search_page(request: Request) -> Response:
    params = parse_params(dict(request.query_params))
    return await run_in_threadpool(_search_page, request, params)


def _search_page(request: Request, params) -> Response:
    context = {
        "params": params,
        "query": params.as_query(),
        "modes": MODES,
        "sorts": SORTS,
        "collections": _collections(request),
        "items": [],
        "total": 0,
        "pages": 0,
        "message": None,
        "errors": list(params.errors),
        "terms": query_terms(params.q),
    }
    if params.errors:
        return render(request, "search.html", context, status_code=400)
    if not params.q.strip():
        context["message"] = "Type a few words, a title or a question to search the papers."
        return render(request, "search.html", context)
    try:
        results = run_search(request, params)
    except BadParams as exc:
        context["errors"] = [str(exc)]
        return render(request, "search.html", context, status_code=400)
    except SearchUnavailable as exc:
        context["errors"] = [f"{str(exc).capitalize()}. Try again in a moment."]
        response = render(request, "search.html", context, status_code=503)
        response.headers["Retry-After"] = "1"
        return response
    scores = {h.paper_id: h.score for h in results.hits}
    with db_of(request).session() as session:
        items = cards(
            session,
            [h.paper_id for h in results.hits],
            visitor_id(request, create=False),
            scores,
            cache=paper_cache(request),
        )
    context.update(
        items=items,
        total=results.total,
        message=results.message,
        pages=min(MAX_PAGE, math.ceil(results.total / params.k)),
    )
    return render(request, "search.html", context)
