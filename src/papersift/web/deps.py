"""The dependencies of the routers: typed aliases for the app's services and the visitor.

Handlers declare what they need (``db: DbDep``, ``search: SearchDep``, ...) and FastAPI
hands it over from the app's :class:`~papersift.web.state.WebState`; no handler reaches
into ``app.state``. The providers are ``async`` and read the request themselves: they only
look things up, so they run in the event loop without a thread hop or sub-dependencies.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from papersift.accounts import Account, voter_key
from papersift.accounts import policy as account_policy
from papersift.accounts import sessions as account_sessions
from papersift.rank.trending import TrendingCache
from papersift.settings import Settings
from papersift.store.db import Database
from papersift.web.ratelimit import ClientViews, per_day
from papersift.web.resources import Voting
from papersift.web.searching import ResultCache, WebSearch
from papersift.web.security import client_key, visitor_id
from papersift.web.state import WebState, web_state
from papersift.web.templating import Renderer


async def get_state(request: Request) -> WebState:
    return web_state(request)


StateDep = Annotated[WebState, Depends(get_state)]


async def get_settings(request: Request) -> Settings:
    return web_state(request).settings


async def get_db(request: Request) -> Database:
    return web_state(request).db


async def get_search(request: Request) -> WebSearch:
    return web_state(request).search


async def get_cache(request: Request) -> ResultCache:
    return web_state(request).search.cache


async def get_paper_cache(request: Request) -> ResultCache:
    return web_state(request).paper_cache


async def get_trending(request: Request) -> TrendingCache:
    return web_state(request).trending


async def get_views(request: Request) -> ClientViews:
    state = web_state(request)
    if state.views.cap is None:  # the daily per-address cap, made once per app
        cap = per_day(state.settings.views_per_ip_paper)
        state.views.cap = state.key_limiter(f"views/{cap.capacity:g}", cap)
    return ClientViews(state.views, client_key(await client_ip(request)))


async def client_ip(request: Request) -> str:
    """The client's address: the TCP peer, or what a trusted proxy says it is (the app's
    ``ProxyHeadersMiddleware`` has already decided, from ``forwarded_allow_ips``)."""
    return request.client.host if request.client else "-"


async def get_voting(request: Request, account: AccountDep) -> Voting:
    state = web_state(request)
    cap = per_day(state.settings.votes_per_ip_paper)
    anonymous = account is None and await run_in_threadpool(
        account_policy.anonymous_votes, state.settings, state.db
    )
    return Voting(
        state.db,
        state.trending,
        state.vote_limiter,
        await client_ip(request),
        state.key_limiter(f"votes-per-paper/{cap.capacity:g}", cap),
        account=account,
        anonymous=anonymous,
    )


async def current_account(request: Request) -> Account | None:
    """The signed-in account: from the session cookie, or on ``/api/`` paths from an
    ``Authorization: Bearer`` personal token (a wrong token there is a 401). Resolved
    once per request (kept in the request's state for the templates); anonymous requests
    without either never touch the database."""
    state = request.scope.setdefault("state", {})
    if "account" in state:
        found: Account | None = state["account"]
        return found
    db = web_state(request).db
    found = None
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer " and request.url.path.startswith("/api/"):
        found = await run_in_threadpool(account_sessions.token_account, db, auth[7:].strip())
        if found is None:
            raise HTTPException(
                401, "invalid or revoked API token", headers={"WWW-Authenticate": "Bearer"}
            )
    else:
        cookie = request.cookies.get(account_sessions.SESSION_COOKIE)
        if cookie:
            found = await run_in_threadpool(account_sessions.session_account, db, cookie)
    state["account"] = found
    return found


AccountDep = Annotated[Account | None, Depends(current_account)]


async def current_visitor(request: Request, account: AccountDep) -> str | None:
    """Whose votes a page shows as "voted": the signed-in account's voter key, else the
    visitor of the signed cookie, if any (no cookie is issued)."""
    if account is not None:
        return voter_key(account.id)
    return visitor_id(request, create=False)


def _sign_in_first(request: Request) -> HTTPException:
    if request.url.path.startswith("/api/"):
        return HTTPException(
            401, "sign in or send a personal API token", headers={"WWW-Authenticate": "Bearer"}
        )
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return HTTPException(
        303, "Sign in first.", headers={"Location": "/signin?next=" + quote(target, safe="")}
    )


async def require_account(request: Request, account: AccountDep) -> Account:
    """The signed-in account; anonymous: 401 on the API, a redirect to sign-in on pages."""
    if account is None:
        raise _sign_in_first(request)
    return account


SignedInDep = Annotated[Account, Depends(require_account)]


async def require_admin(request: Request, account: SignedInDep) -> Account:
    """A signed-in admin, or 403."""
    if not account.is_admin:
        raise HTTPException(403, "Only administrators can do this.")
    return account


AdminDep = Annotated[Account, Depends(require_admin)]


async def get_renderer(request: Request, account: AccountDep) -> Renderer:
    """Every page's renderer; resolving the account here puts it in every page's context."""
    return Renderer(request, web_state(request).templates)


SettingsDep = Annotated[Settings, Depends(get_settings)]
DbDep = Annotated[Database, Depends(get_db)]
SearchDep = Annotated[WebSearch, Depends(get_search)]
CacheDep = Annotated[ResultCache, Depends(get_cache)]
PaperCacheDep = Annotated[ResultCache, Depends(get_paper_cache)]
TrendingDep = Annotated[TrendingCache, Depends(get_trending)]
ViewsDep = Annotated[ClientViews, Depends(get_views)]
VisitorDep = Annotated[str | None, Depends(current_visitor)]
ClientIpDep = Annotated[str, Depends(client_ip)]
RenderDep = Annotated[Renderer, Depends(get_renderer)]
VotingDep = Annotated[Voting, Depends(get_voting)]
