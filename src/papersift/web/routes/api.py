"""JSON API under /api/v1. Errors are application/problem+json (see ``web.problems``);
GETs carry ETag and Cache-Control and answer 304 to a matching If-None-Match."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from starlette.exceptions import HTTPException

from papersift.export import to_bibtex
from papersift.rank import votes as vote_store
from papersift.search import (
    DEFAULT_MODE,
    DEFAULT_SORT,
    MAX_CATEGORY,
    MAX_COLLECTION_NAME,
    MAX_OFFSET,
    MAX_QUERY_LENGTH,
    Mode,
    SearchHit,
    Sort,
)
from papersift.store import collections as collection_store
from papersift.store import papers as paper_store
from papersift.store.db import Database
from papersift.web import schemas
from papersift.web.caching import REVALIDATE, SHORT, CachedRoute, cache_control, in_threadpool
from papersift.web.deps import DbDep, PaperCacheDep, SearchDep, TrendingDep, VotingDep
from papersift.web.resources import (
    TRENDING_DEPTH,
    collection_entries,
    load_collection,
    load_paper,
    load_paper_detail,
    next_link,
    papers_by_id,
    start_of,
    trending_slice,
)
from papersift.web.searching import ResultCache, SearchParams
from papersift.web.security import VISITOR_COOKIE, same_origin, seen_visitor
from papersift.web.templating import collection_url

router = APIRouter(prefix="/api/v1", tags=["api"], route_class=CachedRoute)

NO_CONTROL = r"^[^\x00-\x1f\x7f]*$"
MAX_PAGE_SIZE = 100  # results per API page
K = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="page size")]
OFFSET = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="results to skip")]
PAGE = Annotated[int | None, Query(ge=1, le=1000, description="1-based page; overrides offset")]


def _scored(
    db: Database, cache: ResultCache, hits: list[tuple[str, float]]
) -> list[schemas.ScoredPaper]:
    """Papers for (id, score) pairs in order, with vote counts (unknown ids dropped)."""
    with db.session() as session:
        papers = papers_by_id(session, [i for i, _ in hits], cache)
        counts = vote_store.vote_counts(session, list(papers))
    return [
        schemas.ScoredPaper(
            **schemas.paper_fields(papers[i], counts.get(i, 0)), score=round(float(s), 6)
        )
        for i, s in hits
        if i in papers
    ]


def _pairs(hits: list[SearchHit]) -> list[tuple[str, float]]:
    return [(h.paper_id, h.score) for h in hits]


@router.get(
    "/search",
    response_model=schemas.SearchOut,
    responses=schemas.problem_responses(400, 422, 503),
    dependencies=[cache_control(SHORT)],
)
@in_threadpool
def api_search(
    request: Request,
    db: DbDep,
    search: SearchDep,
    paper_cache: PaperCacheDep,
    q: Annotated[str, Query(max_length=MAX_QUERY_LENGTH, description="the query")] = "",
    k: K = 10,
    offset: OFFSET = 0,
    page: PAGE = None,
    mode: Mode = DEFAULT_MODE,
    sort: Sort = DEFAULT_SORT,
    date_from: date | None = None,
    date_to: date | None = None,
    has_code: bool | None = None,
    collection: Annotated[
        str | None, Query(max_length=MAX_COLLECTION_NAME, pattern=NO_CONTROL)
    ] = None,
    category: Annotated[str | None, Query(max_length=MAX_CATEGORY, pattern=NO_CONTROL)] = None,
) -> schemas.SearchOut:
    """Search papers (hybrid lexical + semantic by default)."""
    start = start_of(offset, k, page)
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
    results = search.run(params, start)
    nxt = None
    if start + k < results.total and results.hits:
        nxt = next_link(request, start + k)
    return schemas.SearchOut(
        query=results.query,
        mode=results.mode,
        sort=sort,
        total=results.total,
        total_is_lower_bound=results.more,
        offset=start,
        k=k,
        message=results.message,
        results=_scored(db, paper_cache, _pairs(results.hits)),
        next=nxt,
    )


@router.get(
    "/papers/{paper_id:path}/similar",
    response_model=schemas.SimilarOut,
    responses=schemas.problem_responses(404, 422, 503),
    dependencies=[cache_control(SHORT)],
)
@in_threadpool
def api_similar(
    db: DbDep, search: SearchDep, paper_cache: PaperCacheDep, paper_id: str, k: K = 10
) -> schemas.SimilarOut:
    """Nearest neighbours of a paper (itself and its duplicates excluded)."""
    with db.session() as session:
        paper = load_paper(session, paper_id)
    hits = search.similar(paper.id, k)
    message = None if hits is not None else "this paper is not indexed yet"
    return schemas.SimilarOut(
        id=paper.id, message=message, results=_scored(db, paper_cache, _pairs(hits or []))
    )


def _vote(request: Request, voting: VotingDep, paper_id: str, undo: bool) -> schemas.VoteOut:
    if not same_origin(request):
        raise HTTPException(403, "Cross-site requests cannot vote.")
    visitor = seen_visitor(request)
    if visitor is None and voting.account is None:
        raise HTTPException(
            403,
            f"Votes need the visitor cookie ({VISITOR_COOKIE}) a page of this site sets: "
            "load a page (e.g. /papers/ID) first, then vote with its cookie.",
        )
    canonical, voted, count = voting.cast(visitor or "", paper_id, undo=undo)
    return schemas.VoteOut(id=canonical, votes=count, voted=voted)


@router.post(
    "/papers/{paper_id:path}/upvote",
    response_model=schemas.VoteOut,
    responses=schemas.problem_responses(403, 404, 413, 429),
)
@in_threadpool
def api_upvote(
    request: Request, voting: VotingDep, paper_id: str, undo: bool = False
) -> schemas.VoteOut:
    """Upvote a paper as this visitor (the ``ps_visitor`` cookie an earlier page view set;
    without one, 403); ``undo=true`` removes the vote. One vote per visitor per paper; rate
    limited per visitor and address, and a few votes per paper per address a day."""
    return _vote(request, voting, paper_id, undo)


@router.delete(
    "/papers/{paper_id:path}/upvote",
    response_model=schemas.VoteOut,
    responses=schemas.problem_responses(403, 404, 429),
)
@in_threadpool
def api_remove_upvote(request: Request, voting: VotingDep, paper_id: str) -> schemas.VoteOut:
    """Remove this visitor's upvote (idempotent)."""
    return _vote(request, voting, paper_id, True)


@router.get(
    "/papers/{paper_id:path}",
    response_model=schemas.PaperDetail,
    responses=schemas.problem_responses(404, 422),
    dependencies=[cache_control(REVALIDATE)],
)
@in_threadpool
def api_paper(db: DbDep, paper_id: str) -> schemas.PaperDetail:
    """One paper by id, arXiv id or DOI, with its vote count, collections and BibTeX."""
    with db.session() as session:
        found = load_paper_detail(session, paper_id)
    return schemas.PaperDetail(
        **schemas.paper_fields(found.paper, found.votes),
        collections=[
            schemas.CollectionRef(name=n, rank=r, url=collection_url(n))
            for n, r in found.memberships
        ],
        bibtex=to_bibtex(found.paper),
    )


@router.get(
    "/trending",
    response_model=schemas.TrendingOut,
    responses=schemas.problem_responses(400, 422),
    dependencies=[cache_control(REVALIDATE)],
)
@in_threadpool
def api_trending(
    db: DbDep,
    trending: TrendingDep,
    paper_cache: PaperCacheDep,
    window: Literal["day", "week", "month"] = "day",
    k: K = 20,
    offset: Annotated[int, Query(ge=0, le=TRENDING_DEPTH)] = 0,
    page: PAGE = None,
) -> schemas.TrendingOut:
    """Trending papers, best first (time-decayed upvotes and views; see the README)."""
    start = start_of(offset, k, page)
    ranked, _ = trending_slice(trending, window, start, k)
    signal = trending.ranked(window, start + k + 1).signal
    return schemas.TrendingOut(
        window=window, signal=signal, offset=start, k=k, results=_scored(db, paper_cache, ranked)
    )


@router.get(
    "/collections",
    response_model=schemas.CollectionsOut,
    responses=schemas.problem_responses(422),
    dependencies=[cache_control(SHORT)],
)
@in_threadpool
def api_collections(
    db: DbDep, k: K = 50, offset: OFFSET = 0, page: PAGE = None
) -> schemas.CollectionsOut:
    """All collections with their sizes, by name."""
    start = start_of(offset, k, page)
    with db.session() as session:
        rows = collection_store.collection_summaries(session)
    items = [
        schemas.CollectionSummary(
            name=c.name,
            origin=c.origin,
            title=c.title,
            description=c.description,
            size=c.size,
            url=collection_url(c.name),
        )
        for c in rows[start : start + k]
    ]
    return schemas.CollectionsOut(total=len(rows), offset=start, k=k, results=items)


@router.get(
    "/collections/{name:path}",
    response_model=schemas.CollectionOut,
    responses=schemas.problem_responses(404, 422),
    dependencies=[cache_control(SHORT)],
)
@in_threadpool
def api_collection(
    db: DbDep, name: str, k: K = 50, offset: OFFSET = 0, page: PAGE = None
) -> schemas.CollectionOut:
    """One collection's papers in their saved order."""
    start = start_of(offset, k, page)
    with db.session() as session:
        found = load_collection(session, name)
        entries = collection_entries(found, start, k)
        papers = paper_store.get_papers(session, [e.paper_id for e in entries])
        counts = vote_store.vote_counts(session, list(papers))
    items = [
        schemas.RankedPaper(
            **schemas.paper_fields(papers[e.paper_id], counts.get(e.paper_id, 0)), rank=e.rank
        )
        for e in entries
        if e.paper_id in papers
    ]
    return schemas.CollectionOut(
        name=found.name,
        origin=found.origin,
        title=found.title,
        description=found.description,
        size=found.size,
        offset=start,
        k=k,
        results=items,
    )
