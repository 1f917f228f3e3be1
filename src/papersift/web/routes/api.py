"""JSON API under /api/v1. Errors are application/problem+json (see ``web.problems``);
GETs carry ETag and Cache-Control and answer 304 to a matching If-None-Match."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response

from papersift.export import to_bibtex
from papersift.model import Paper
from papersift.rank import votes as vote_store
from papersift.store import collections as collection_store
from papersift.web import schemas
from papersift.web.caching import REVALIDATE, SHORT, cached_json
from papersift.web.deps import cast_vote, clean_ref, db_of, load_paper, paper_cache, papers_by_id
from papersift.web.searching import (
    BadParams,
    SearchParams,
    SearchUnavailable,
    run_search,
    similar_papers,
)
from papersift.web.security import same_origin
from papersift.web.templating import collection_url, paper_url

router = APIRouter(prefix="/api/v1", tags=["api"])

NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
K = Annotated[int, Query(ge=1, le=100, description="page size")]
OFFSET = Annotated[int, Query(ge=0, le=10_000, description="results to skip")]
PAGE = Annotated[int | None, Query(ge=1, le=1000, description="1-based page; overrides offset")]


def paper_json(paper: Paper, votes: int) -> dict:
    data = paper.to_dict()
    data.pop("sources", None)
    data["url"] = paper_url(paper.id)
    data["votes"] = votes
    return data


def _offset(offset: int, k: int, page: int | None) -> int:
    return (page - 1) * k if page else offset


def _scored(request: Request, hits: list[tuple[str, float]]) -> list[dict]:
    """Papers for (id, score) pairs in order, with vote counts (unknown ids dropped)."""
    with db_of(request).session() as session:
        papers = papers_by_id(session, [i for i, _ in hits], paper_cache(request))
        counts = vote_store.vote_counts(session, list(papers))
    return [
        {**paper_json(papers[i], counts.get(i, 0)), "score": round(float(s), 6)}
        for i, s in hits
        if i in papers
    ]


@router.get(
    "/search", response_model=schemas.SearchOut, responses=schemas.problem_responses(400, 422, 503)
)
def api_search(
    request: Request,
    q: Annotated[str, Query(max_length=10_000, description="the query")] = "",
    k: K = 10,
    offset: OFFSET = 0,
    page: PAGE = None,
    mode: Literal["hybrid", "lexical", "semantic"] = "hybrid",
    sort: Literal["relevance", "date"] = "relevance",
    date_from: date | None = None,
    date_to: date | None = None,
    has_code: bool | None = None,
    collection: Annotated[str | None, Query(max_length=255, pattern=NO_CONTROL)] = None,
    category: Annotated[str | None, Query(max_length=64, pattern=NO_CONTROL)] = None,
) -> Response:
    """Search papers (hybrid lexical + semantic by default)."""
    start = _offset(offset, k, page)
    params = SearchParams(
        q=q,
        mode=mode,
        sort=sort,
        date_from=date_from,
        date_to=date_to,
        has_code=has_code,
        collection=collection,
        category=category,
        k=k,
    )
    try:
        results = run_search(request, params, start)
    except BadParams as exc:
        raise HTTPException(400, str(exc)) from exc
    except SearchUnavailable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from exc
    items = _scored(request, [(h.paper_id, h.score) for h in results.hits])
    nxt = None
    if start + k < results.total and results.hits:
        nxt = str(request.url.include_query_params(offset=start + k).remove_query_params("page"))
    payload = {
        "query": results.query,
        "mode": results.mode,
        "sort": sort,
        "total": results.total,
        "offset": start,
        "k": k,
        "message": results.message,
        "results": items,
        "next": nxt,
    }
    return cached_json(request, payload, SHORT)


@router.get(
    "/papers/{paper_id:path}/similar",
    response_model=schemas.SimilarOut,
    responses=schemas.problem_responses(404, 422, 503),
)
def api_similar(request: Request, paper_id: str, k: K = 10) -> Response:
    """Nearest neighbours of a paper (itself and its duplicates excluded)."""
    with db_of(request).session() as session:
        paper = load_paper(session, paper_id)
    message = None
    try:
        hits = [(h.paper_id, h.score) for h in similar_papers(request, paper.id, k)]
    except KeyError:
        hits, message = [], "this paper is not indexed yet"
    except SearchUnavailable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from exc
    payload = {"id": paper.id, "message": message, "results": _scored(request, hits)}
    return cached_json(request, payload, SHORT)


def _vote(request: Request, paper_id: str, undo: bool) -> dict:
    if not same_origin(request):
        raise HTTPException(403, "Cross-site requests cannot vote.")
    voted, count = cast_vote(request, paper_id, undo=undo)
    with db_of(request).session() as session:
        canonical = load_paper(session, paper_id).id
    return {"id": canonical, "votes": count, "voted": voted}


@router.post(
    "/papers/{paper_id:path}/upvote",
    response_model=schemas.VoteOut,
    responses=schemas.problem_responses(403, 404, 413, 429),
)
def api_upvote(request: Request, paper_id: str, undo: bool = False) -> dict:
    """Upvote a paper as this visitor (cookie issued on the first call); ``undo=true``
    removes the vote. One vote per visitor per paper; rate limited per visitor and IP."""
    return _vote(request, paper_id, undo)


@router.delete(
    "/papers/{paper_id:path}/upvote",
    response_model=schemas.VoteOut,
    responses=schemas.problem_responses(403, 404, 429),
)
def api_remove_upvote(request: Request, paper_id: str) -> dict:
    """Remove this visitor's upvote (idempotent)."""
    return _vote(request, paper_id, True)


@router.get(
    "/papers/{paper_id:path}",
    response_model=schemas.PaperDetail,
    responses=schemas.problem_responses(404, 422),
)
def api_paper(request: Request, paper_id: str) -> Response:
    """One paper by id, arXiv id or DOI, with its vote count, collections and BibTeX."""
    with db_of(request).session() as session:
        paper = load_paper(session, paper_id)
        votes = vote_store.vote_count(session, paper.id)
        memberships = collection_store.collections_of_paper(session, paper.id)
    payload = paper_json(paper, votes)
    payload["collections"] = [
        {"name": n, "rank": r, "url": collection_url(n)} for n, r in memberships
    ]
    payload["bibtex"] = to_bibtex(paper)
    return cached_json(request, payload, REVALIDATE)


@router.get(
    "/trending",
    response_model=schemas.TrendingOut,
    responses=schemas.problem_responses(400, 422),
)
def api_trending(
    request: Request,
    window: Literal["day", "week", "month"] = "day",
    k: K = 20,
    offset: Annotated[int, Query(ge=0, le=1000)] = 0,
    page: PAGE = None,
) -> Response:
    """Trending papers, best first (time-decayed upvotes and views; see the README)."""
    start = _offset(offset, k, page)
    if start > 1000:
        raise HTTPException(400, "trending lists stop at 1000 papers")
    ranked = request.app.state.trending.get(window, start + k)[start:]
    payload = {"window": window, "offset": start, "k": k, "results": _scored(request, ranked)}
    return cached_json(request, payload, REVALIDATE)


@router.get(
    "/collections", response_model=schemas.CollectionsOut, responses=schemas.problem_responses(422)
)
def api_collections(request: Request, k: K = 50, offset: OFFSET = 0, page: PAGE = None) -> Response:
    """All collections with their sizes, by name."""
    start = _offset(offset, k, page)
    with db_of(request).session() as session:
        rows = collection_store.collection_sizes(session)
    items = [
        {"name": n, "origin": o, "size": c, "url": collection_url(n)}
        for n, o, c in rows[start : start + k]
    ]
    payload = {"total": len(rows), "offset": start, "k": k, "results": items}
    return cached_json(request, payload, SHORT)


@router.get(
    "/collections/{name:path}",
    response_model=schemas.CollectionOut,
    responses=schemas.problem_responses(404, 422),
)
def api_collection(
    request: Request, name: str, k: K = 50, offset: OFFSET = 0, page: PAGE = None
) -> Response:
    """One collection's papers in their saved order."""
    from papersift.store import papers as paper_store

    start = _offset(offset, k, page)
    cleaned = clean_ref(name)
    with db_of(request).session() as session:
        found = collection_store.get_collection(session, cleaned) if cleaned else None
        if found is None:
            raise HTTPException(404, "No collection with this name.")
        entries = found.entries[start : start + k]
        papers = paper_store.get_papers(session, [e.paper_id for e in entries])
        counts = vote_store.vote_counts(session, list(papers))
    items = [
        {**paper_json(papers[e.paper_id], counts.get(e.paper_id, 0)), "rank": e.rank}
        for e in entries
        if e.paper_id in papers
    ]
    payload = {
        "name": found.name,
        "origin": found.origin,
        "size": found.size,
        "offset": start,
        "k": k,
        "results": items,
    }
    return cached_json(request, payload, SHORT)
