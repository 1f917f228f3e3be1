"""Saved searches on the web: save any search from the search page, see each one's new
matches since the last visit, put it in the digest, follow it as an Atom feed.

The feed's URL carries a signed key naming the reader and the search (feed readers send
no cookies); it shows the search's newest matches whoever fetches it, and stops working
when the search is deleted.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from itsdangerous import BadSignature, URLSafeSerializer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import RedirectResponse, Response

from papersift.keys import signing_key
from papersift.library import LibraryError, NotFound, searches
from papersift.library.searches import FILTER_KEYS, SavedSearch
from papersift.store import papers as paper_store
from papersift.web.deps import RenderDep, SignedInDep, StateDep
from papersift.web.resources import cards
from papersift.web.routes.feeds import FEED_SIZE, _respond, atom
from papersift.web.routes.library import _field, _form, _search
from papersift.web.state import WebState
from papersift.web.templating import with_query

router = APIRouter(include_in_schema=False)

NEW_SHOWN = 50


def _signer(state: WebState) -> URLSafeSerializer:
    return URLSafeSerializer(signing_key(state.settings, state.db), salt="papersift.saved-feed")


def feed_url(state: WebState, user_id: int, search_id: int) -> str:
    key = _signer(state).dumps([user_id, search_id])
    return f"/feeds/saved/{search_id}.atom?key={key}"


def search_url(search: SavedSearch) -> str:
    return "/search" + with_query(search.params)


def _new_counts(state: WebState, items: list[SavedSearch]) -> dict[int, int | None]:
    """New matches per saved search (None when search is unavailable right now)."""
    out: dict[int, int | None] = {}
    for item in items:
        try:
            with state.search.gate:
                out[item.id] = len(searches.new_matches(_search(state), state.db, item))
        except Exception:
            out[item.id] = None
    return out


@router.get("/library/searches")
def searches_page(render: RenderDep, state: StateDep, account: SignedInDep) -> Response:
    items = searches.saved_searches(state.db, account.id)
    context = {
        "searches": items,
        "new": _new_counts(state, items),
        "feeds": {s.id: feed_url(state, account.id, s.id) for s in items},
        "search_urls": {s.id: search_url(s) for s in items},
    }
    return render("library/searches.html", context)


@router.get("/library/searches/{search_id}")
def saved_search_page(
    render: RenderDep, state: StateDep, account: SignedInDep, search_id: int
) -> Response:
    """The new matches since the last visit (then the visit counts as seen)."""
    try:
        item = searches.saved_search(state.db, account.id, search_id)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    with state.search.gate:
        ids = searches.new_matches(_search(state), state.db, item, k=NEW_SHOWN)
    with state.db.session() as session:
        items = cards(session, ids, None)
    searches.mark_seen(state.db, account.id, search_id)
    context = {
        "search": item,
        "items": items,
        "feed": feed_url(state, account.id, item.id),
        "search_url": search_url(item),
    }
    return render("library/saved_search.html", context, cache_control="private, no-store")


@router.post("/library/searches")
async def save_search_form(request: Request, state: StateDep, account: SignedInDep) -> Response:
    """Save the search page's current search (its q and filters come as form fields)."""
    form = await _form(request, max_fields=20)
    filters: dict[str, Any] = {k: _field(form, k) for k in FILTER_KEYS}
    try:
        item = await run_in_threadpool(
            lambda: searches.save_search(
                state.db,
                account.id,
                _field(form, "q") or "",
                filters,
                name=_field(form, "name"),
                in_digest=bool(_field(form, "in_digest")),
            )
        )
    except LibraryError as exc:
        raise HTTPException(400, str(exc)) from None
    return RedirectResponse(f"/library/searches#s{item.id}", status_code=303)


@router.post("/library/searches/{search_id}/digest")
async def digest_form(
    request: Request, state: StateDep, account: SignedInDep, search_id: int
) -> Response:
    form = await _form(request)
    on = _field(form, "in_digest") == "1"
    try:
        await run_in_threadpool(
            lambda: searches.update_search(state.db, account.id, search_id, in_digest=on)
        )
    except LibraryError as exc:
        raise HTTPException(404 if isinstance(exc, NotFound) else 400, str(exc)) from None
    return RedirectResponse(f"/library/searches#s{search_id}", status_code=303)


@router.post("/library/searches/{search_id}/delete")
async def delete_form(
    request: Request, state: StateDep, account: SignedInDep, search_id: int
) -> Response:
    await _form(request)
    try:
        await run_in_threadpool(searches.delete_search, state.db, account.id, search_id)
    except NotFound as exc:
        raise HTTPException(404, str(exc)) from None
    return RedirectResponse("/library/searches", status_code=303)


@router.get("/feeds/saved/{search_id}.atom")
def saved_search_feed(state: StateDep, search_id: int, key: str = "") -> Response:
    """The saved search's newest matches (by first seen), as Atom."""
    try:
        user_id, signed_id = _signer(state).loads(key)
    except (BadSignature, ValueError, TypeError):
        raise HTTPException(404, "no such feed") from None
    if signed_id != search_id or not isinstance(user_id, int):
        raise HTTPException(404, "no such feed")
    try:
        item = searches.saved_search(state.db, user_id, search_id)
    except NotFound:
        raise HTTPException(404, "no such feed") from None
    with state.search.gate:
        ids = searches.matches(_search(state), state.db, item, k=200)
    with state.db.session() as session:
        found = paper_store.get_papers(session, ids)
    newest = sorted(
        (found[i] for i in ids if i in found),
        key=lambda p: p.first_seen.isoformat() if p.first_seen else "",
        reverse=True,
    )[:FEED_SIZE]
    body = atom(
        state.settings.base_url,
        f"papersift: {item.name[:200]}",
        feed_url(state, user_id, search_id),
        search_url(item),
        newest,
    )
    response = _respond(body)
    response.headers["Cache-Control"] = "private, max-age=300"
    return response
