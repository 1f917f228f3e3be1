"""Comments on the web: the forms under a paper and ``/api/v1/comments``.

- ``POST /comments`` (paper_id, body, reply_to): post; ``POST /comments/{id}/edit``,
  ``/delete`` (own), ``/hide`` and ``/show`` (admins). Every form carries the CSRF token and
  answers with a redirect back to the comment (303), so the page works without script.
- ``GET /api/v1/comments?paper=ID``: the thread as JSON; ``POST /api/v1/comments``,
  ``PATCH`` and ``DELETE /api/v1/comments/{id}``: the same with a session or a token.

Posting is limited per account (settings ``comment_burst``, ``comments_per_hour``): a
stolen session or a script cannot flood a thread. The rules are :mod:`papersift.comments.service`'s.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, RedirectResponse, Response

from papersift.accounts import Account
from papersift.comments import service
from papersift.comments.render import MAX_CHARS
from papersift.web.deps import AccountDep, DbDep, SignedInDep, StateDep
from papersift.web.ratelimit import Limit
from papersift.web.schemas import problem_responses
from papersift.web.security import CSRF_FIELD, verify_csrf
from papersift.web.state import WebState
from papersift.web.templating import paper_url

router = APIRouter()
api_router = APIRouter(prefix="/api/v1", tags=["api"])

MAX_ID = 2**31 - 1  # comment ids are 32-bit integers in every database
CommentId = Annotated[int, Path(ge=1, le=MAX_ID)]

STALE_FORM = "This form has expired or did not come from this site; reload the page and try again."


def comment_limit(state: WebState) -> tuple[str, Limit]:
    """The deployment's posting limit (``comment_burst`` at once, then
    ``comments_per_hour``), and the limiter scope it lives under (changing either setting
    starts fresh buckets rather than reinterpreting old ones)."""
    burst, hourly = state.settings.comment_burst, state.settings.comments_per_hour
    return f"comments/{burst}/{hourly}", Limit(capacity=burst, rate=hourly / 3600)


def _take(state: WebState, account: Account) -> None:
    wait = state.key_limiter(*comment_limit(state)).take(f"acct:{account.id}")
    if wait:
        raise HTTPException(
            429,
            f"You are commenting too fast; try again in {wait} seconds.",
            headers={"Retry-After": str(wait)},
        )


async def _form(request: Request) -> dict[str, str]:
    form = await request.form(max_files=0, max_fields=10)
    token = form.get(CSRF_FIELD)
    if not verify_csrf(request, token if isinstance(token, str) else None):
        raise HTTPException(403, STALE_FORM)
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _int(value: str | None) -> int | None:
    try:
        number = int(value) if value not in (None, "") else None
    except ValueError:
        raise HTTPException(400, "not a comment id") from None
    if number is not None and not 1 <= number <= MAX_ID:
        raise HTTPException(400, "not a comment id")
    return number


def _back(paper_id: str, anchor: str = "comments") -> RedirectResponse:
    return RedirectResponse(f"{paper_url(paper_id)}#{anchor}", status_code=303)


@router.post("/comments", include_in_schema=False)
async def comment_post(
    request: Request, state: StateDep, db: DbDep, account: SignedInDep
) -> Response:
    form = await _form(request)
    paper_id = form.get("paper_id", "")
    _take(state, account)
    try:
        new_id = await run_in_threadpool(
            service.post, db, account, paper_id, form.get("body"), _int(form.get("reply_to"))
        )
    except KeyError:
        raise HTTPException(404, "There is no such paper.") from None
    except service.CommentError as exc:
        raise HTTPException(400, f"Your comment was not posted: {exc}.") from None
    return _back(paper_id, f"comment-{new_id}")


@router.post("/comments/{comment_id}/{action}", include_in_schema=False)
async def comment_action(
    request: Request, db: DbDep, account: SignedInDep, comment_id: CommentId, action: str
) -> Response:
    form = await _form(request)
    try:
        if action == "edit":
            paper_id = await run_in_threadpool(
                service.edit, db, account, comment_id, form.get("body")
            )
            return _back(paper_id, f"comment-{comment_id}")
        if action == "delete":
            paper_id = await run_in_threadpool(service.delete, db, account, comment_id)
        elif action in ("hide", "show"):
            paper_id = await run_in_threadpool(
                service.set_hidden, db, account, comment_id, action == "hide"
            )
        else:
            raise HTTPException(404, "No such action.")
    except service.NotAllowed as exc:
        raise HTTPException(403, f"Not allowed: {exc}.") from None
    except service.CommentError as exc:
        raise HTTPException(400, f"Not saved: {exc}.") from None
    return _back(paper_id)


class CommentIn(BaseModel):
    paper_id: str = Field(min_length=1, max_length=255)
    body: str = Field(min_length=1, max_length=MAX_CHARS + 100)
    reply_to: int | None = Field(default=None, ge=1, le=MAX_ID)


class CommentEdit(BaseModel):
    body: str = Field(min_length=1, max_length=MAX_CHARS + 100)


@api_router.get("/comments", responses=problem_responses(422))
async def api_comments(
    db: DbDep, account: AccountDep, paper: Annotated[str, Query(min_length=1, max_length=255)]
) -> JSONResponse:
    """The comments under a paper: top-level ones oldest first, each with its replies;
    ``html`` is the sanitized rendering of the Markdown."""
    views = await run_in_threadpool(service.thread, db, paper, account)
    return JSONResponse({"paper_id": paper, "comments": [v.as_json() for v in views]})


@api_router.post("/comments", status_code=201, responses=problem_responses(401, 404, 422, 429))
async def api_comment_create(
    state: StateDep, db: DbDep, account: SignedInDep, comment: Annotated[CommentIn, Body()]
) -> JSONResponse:
    """Post a comment (Markdown) or a reply (``reply_to``); limited per account (429)."""
    _take(state, account)
    try:
        new_id = await run_in_threadpool(
            service.post, db, account, comment.paper_id, comment.body, comment.reply_to
        )
    except KeyError:
        raise HTTPException(404, "no such paper") from None
    except service.CommentError as exc:
        raise HTTPException(422, str(exc)) from None
    return JSONResponse({"id": new_id}, status_code=201)


@api_router.patch("/comments/{comment_id}", responses=problem_responses(401, 403, 422))
async def api_comment_edit(
    db: DbDep,
    account: SignedInDep,
    comment_id: CommentId,
    comment: Annotated[CommentEdit, Body()],
) -> JSONResponse:
    """Replace the text of your own comment."""
    try:
        await run_in_threadpool(service.edit, db, account, comment_id, comment.body)
    except service.NotAllowed as exc:
        raise HTTPException(403, str(exc)) from None
    except service.CommentError as exc:
        raise HTTPException(422, str(exc)) from None
    return JSONResponse({"id": comment_id})


@api_router.delete(
    "/comments/{comment_id}", status_code=204, responses=problem_responses(401, 403, 422)
)
async def api_comment_remove(db: DbDep, account: SignedInDep, comment_id: CommentId) -> Response:
    """Delete your own comment."""
    try:
        await run_in_threadpool(service.delete, db, account, comment_id)
    except service.NotAllowed as exc:
        raise HTTPException(403, str(exc)) from None
    return Response(status_code=204)
