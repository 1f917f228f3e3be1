"""The "For you" pages and ``/api/v1/recommendations``: a signed-in reader's recommendations.

- ``GET /for-you`` (whole library) and ``GET /for-you/{tag}``; ``?window=week|all``.
- ``POST /for-you/feedback`` (paper_id, action=dismiss|more|undo, tag): "not interested"
  takes the paper off at once (the redirect shows the new list), "more like this" adds a
  positive; ``POST /for-you/reset`` (tag) forgets a tag's feedback. CSRF on every form;
  with ``Accept: application/json`` (the page's script) the answer is JSON.
- ``GET /api/v1/recommendations?tag=&window=&k=``, ``POST /api/v1/recommendations/feedback``
  and ``DELETE /api/v1/recommendations/feedback?tag=`` (reset): the same with a token.

The work is :mod:`papersift.rank.foryou`'s; this module parses and renders.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Body, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, RedirectResponse, Response

from papersift.accounts import voter_key
from papersift.rank.foryou import WINDOWS, ForYou, ForYouResult, UnknownTag, get_foryou
from papersift.rank.recommend import RecommendError
from papersift.web.deps import DbDep, PaperCacheDep, RenderDep, SearchDep, SignedInDep
from papersift.web.resources import cards
from papersift.web.routes.pages import local_path
from papersift.web.schemas import problem_responses
from papersift.web.searching import WebSearch
from papersift.web.security import CSRF_FIELD, verify_csrf

router = APIRouter()
api_router = APIRouter(prefix="/api/v1", tags=["api"])

STALE_FORM = "This form has expired or did not come from this site; reload the page and try again."
Action = Literal["dismiss", "more", "undo"]


def _service(db: Any, search: WebSearch) -> ForYou:
    return get_foryou(db, search.service())


def page_url(tag: str | None, window: str = "all") -> str:
    base = "/for-you" + (f"/{quote(tag, safe='')}" if tag else "")
    return base + ("?window=week" if window == "week" else "")


def _result(service: ForYou, user_id: int, tag: str | None, window: str, k: int) -> ForYouResult:
    try:
        return service.recommendations(user_id, tag, window=window, k=k)
    except UnknownTag:
        raise HTTPException(404, f"You have no tag called {tag!r}.") from None
    except RecommendError as exc:
        return ForYouResult([], [], 0, str(exc), window)


def _page(
    render: RenderDep,
    db: DbDep,
    search: SearchDep,
    paper_cache: PaperCacheDep,
    account: SignedInDep,
    tag: str | None,
    window: str,
) -> Response:
    window = window if window in WINDOWS else "all"
    service = _service(db, search)
    result = _result(service, account.id, tag, window, 20)
    named = [p.paper_id for p in result.picks]
    named += [s.paper_id for p in result.picks for s, _ in p.nearest]
    named += [s.paper_id for s, _ in result.weights]
    with db.session() as session:
        shown = cards(session, list(dict.fromkeys(named)), voter_key(account.id), cache=paper_cache)
    by_id = {c.paper.id: c for c in shown}
    return render(
        "foryou.html",
        {
            "tag": tag,
            "tags": service.tags(account.id),
            "window": window,
            "windows": WINDOWS,
            "result": result,
            "items": [(p, by_id[p.paper_id]) for p in result.picks if p.paper_id in by_id],
            "papers": {pid: c.paper for pid, c in by_id.items()},
            "here": page_url(tag, window),
            "page_url": page_url,
        },
    )


@router.get("/for-you", include_in_schema=False)
def foryou_page(
    render: RenderDep,
    db: DbDep,
    search: SearchDep,
    paper_cache: PaperCacheDep,
    account: SignedInDep,
    window: str = "all",
) -> Response:
    return _page(render, db, search, paper_cache, account, None, window)


@router.get("/for-you/{tag}", include_in_schema=False)
def foryou_tag_page(
    render: RenderDep,
    db: DbDep,
    search: SearchDep,
    paper_cache: PaperCacheDep,
    account: SignedInDep,
    tag: str,
    window: str = "all",
) -> Response:
    return _page(render, db, search, paper_cache, account, tag, window)


async def _form(request: Request) -> dict[str, str]:
    form = await request.form(max_files=0, max_fields=10)
    token = form.get(CSRF_FIELD)
    if not verify_csrf(request, token if isinstance(token, str) else None):
        raise HTTPException(403, STALE_FORM)
    return {k: v for k, v in form.items() if isinstance(v, str)}


@router.post("/for-you/feedback", include_in_schema=False)
async def foryou_feedback(
    request: Request, db: DbDep, search: SearchDep, account: SignedInDep
) -> Response:
    form = await _form(request)
    tag = form.get("tag") or None
    action = form.get("action", "")
    if action not in ("dismiss", "more", "undo"):
        raise HTTPException(400, "Unknown action.")
    service = _service(db, search)
    try:
        changed = await run_in_threadpool(
            service.feedback, account.id, form.get("paper_id", ""), action, tag
        )
    except UnknownTag:
        raise HTTPException(404, f"You have no tag called {tag!r}.") from None
    if "application/json" in request.headers.get("accept", ""):
        return JSONResponse({"changed": changed, "action": action})
    back = local_path(form.get("next")) or page_url(tag)
    return RedirectResponse(back, status_code=303)


@router.post("/for-you/reset", include_in_schema=False)
async def foryou_reset(
    request: Request, db: DbDep, search: SearchDep, account: SignedInDep
) -> Response:
    form = await _form(request)
    tag = form.get("tag") or None
    try:
        await run_in_threadpool(_service(db, search).reset, account.id, tag)
    except UnknownTag:
        raise HTTPException(404, f"You have no tag called {tag!r}.") from None
    return RedirectResponse(page_url(tag), status_code=303)


# -- JSON --------------------------------------------------------------------------------


def result_json(result: ForYouResult, tag: str | None) -> dict[str, Any]:
    return {
        "tag": tag,
        "window": result.window,
        "library_size": result.library_size,
        "message": result.message or None,
        "recommendations": [
            {
                "paper_id": p.paper_id,
                "score": round(p.score, 4),
                "reasons": {
                    "nearest_saved": [
                        {
                            "paper_id": s.paper_id,
                            "tag": s.tag,
                            "more_like_this": s.positive,
                            "similarity": sim,
                        }
                        for s, sim in p.nearest
                    ],
                    "shared_terms": p.terms,
                    "co_saved": p.co_saved,
                },
            }
            for p in result.picks
        ],
        "weighs_most": [
            {"paper_id": s.paper_id, "tag": s.tag, "picks": n} for s, n in result.weights
        ],
    }


@api_router.get("/recommendations", responses=problem_responses(401, 404, 422))
def api_recommendations(
    db: DbDep,
    search: SearchDep,
    account: SignedInDep,
    tag: Annotated[str | None, Query(max_length=100)] = None,
    window: Literal["all", "week"] = "all",
    k: Annotated[int, Query(ge=1, le=100)] = 20,
) -> JSONResponse:
    """Your recommendations (whole library, or one tag), best first, each with the saved
    papers it is nearest to and the terms it shares with them."""
    result = _result(_service(db, search), account.id, tag, window, k)
    return JSONResponse(result_json(result, tag))


class FeedbackIn(BaseModel):
    paper_id: str = Field(min_length=1, max_length=255)
    action: Action
    tag: str | None = Field(default=None, max_length=100)


@api_router.post("/recommendations/feedback", responses=problem_responses(401, 404, 422))
async def api_recommendation_feedback(
    db: DbDep, search: SearchDep, account: SignedInDep, body: Annotated[FeedbackIn, Body()]
) -> JSONResponse:
    """ "Not interested" (``dismiss``), "more like this" (``more``) or ``undo`` on a paper,
    in a tag or (no tag) for the whole library."""
    service = _service(db, search)
    try:
        changed = await run_in_threadpool(
            service.feedback, account.id, body.paper_id, body.action, body.tag
        )
    except UnknownTag:
        raise HTTPException(404, f"no tag called {body.tag!r}") from None
    return JSONResponse({"changed": changed, "action": body.action})


@api_router.delete("/recommendations/feedback", responses=problem_responses(401, 404, 422))
async def api_recommendation_reset(
    db: DbDep,
    search: SearchDep,
    account: SignedInDep,
    tag: Annotated[str | None, Query(max_length=100)] = None,
) -> JSONResponse:
    """Forget the feedback of one tag (or, without ``tag``, of the whole-library page)."""
    try:
        gone = await run_in_threadpool(_service(db, search).reset, account.id, tag)
    except UnknownTag:
        raise HTTPException(404, f"no tag called {tag!r}") from None
    return JSONResponse({"forgotten": gone})
