"""Reader accounts on the web: sign-in by mailed link, sign-out, the account settings
page (sessions, API tokens, subscription, export, delete) and ``/api/v1/account``.

- ``GET/POST /signin``: the form (CSRF, rate limited like sign-ups). The answer never
  says whether the address has an account. The POST sets a nonce cookie (``ps_signin``)
  that binds the mailed link to this browser.
- ``GET /signin/link?token=``: in the browser that asked, signs in at once; anywhere else
  it shows a button whose POST signs in (mail scanners fetch links, they do not click).
- ``POST /signout``, ``POST /account/signout-everywhere``: end this or every session.
- ``/account``: settings; tokens are created (shown once) and revoked there.
- ``GET /account/export`` (and ``/api/v1/account/export``): everything held, as JSON.
- ``GET/POST /account/delete``: the account and all of it, after typing the address.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.encoders import jsonable_encoder
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, RedirectResponse, Response

from papersift.accounts import Account, manage, signin, voter_key
from papersift.accounts import policy as account_policy
from papersift.accounts import sessions as account_sessions
from papersift.digest import outbox, tokens
from papersift.digest.validation import ValidationError
from papersift.store import votes as vote_store
from papersift.web.deps import (
    AccountDep,
    ClientIpDep,
    RenderDep,
    SignedInDep,
    StateDep,
    VisitorDep,
)
from papersift.web.ratelimit import Limit, RateLimiter
from papersift.web.resources import check_rate
from papersift.web.routes.subscriptions import SIGNUP_LIMITS, mail_keys, web_address
from papersift.web.schemas import problem_responses
from papersift.web.security import CSRF_FIELD, verify_csrf, visitor_id
from papersift.web.state import WebState

log = logging.getLogger("papersift.web")

router = APIRouter()
api_router = APIRouter(prefix="/api/v1", tags=["api"])

NONCE_COOKIE = "ps_signin"
NO_STORE = {"Cache-Control": "private, no-store", "Referrer-Policy": "no-referrer"}
EXPIRED = "This sign-in link has expired or was used already; ask for a new one."
STALE_FORM = "This form has expired or did not come from this site; please submit it again."
# Sign-in mails to one inbox (its +tag removed): 3 at once, then one per 5 minutes.
INBOX_LIMIT = Limit(capacity=3, rate=1 / 300)


async def signin_limiter(state: StateDep) -> RateLimiter:
    return state.limiter("signins", SIGNUP_LIMITS)


SigninLimiterDep = Annotated[RateLimiter, Depends(signin_limiter)]


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


def _secure(state: WebState) -> bool:
    return state.settings.base_url.startswith("https://")


def _set_cookie(response: Response, state: WebState, name: str, value: str, age: int) -> None:
    response.set_cookie(
        name, value, max_age=age, path="/", httponly=True, secure=_secure(state), samesite="lax"
    )


def _clear_cookie(response: Response, state: WebState, name: str) -> None:
    response.delete_cookie(name, path="/", httponly=True, secure=_secure(state), samesite="lax")


def mail_gate(state: WebState, address: str) -> bool:
    """Whether a sign-in mail may go to ``address``: quietly not when its inbox had its
    share; 429 past the domain's quarter or everyone's ``signup_mails_per_hour``."""
    inbox, domain = mail_keys(address)
    if state.key_limiter("signin-inbox", INBOX_LIMIT).take(inbox):
        return False
    hourly = state.settings.signup_mails_per_hour
    share = max(5, hourly // 4)
    for scope, key, limit, what in (
        (f"signin-domain/{share}", domain, Limit(share, share / 3600), f"addresses at {domain}"),
        (f"signin-all/{hourly}", "all", Limit(hourly, hourly / 3600), "everyone"),
    ):
        wait = state.key_limiter(scope, limit).take(key)
        if wait:
            raise HTTPException(
                429,
                f"Too many sign-in mails for {what} this hour; try again later.",
                headers={"Retry-After": str(wait)},
            )
    return True


def _policy_note(state: WebState) -> str:
    policy = state.settings.signup_policy
    if policy == "open":
        return "New here? The same link creates your account."
    if policy == "domains":
        return "Addresses at " + ", ".join(state.settings.signup_domain_list) + " can sign up."
    if policy == "invite":
        return "New accounts are by invitation."
    return ""


def _signin_page(
    render: RenderDep,
    state: WebState,
    next_path: str,
    email: str = "",
    errors: list[str] | None = None,
    status: int = 200,
) -> Response:
    return render(
        "account/signin.html",
        {
            "next": next_path,
            "email": email,
            "errors": errors or [],
            "policy_note": _policy_note(state),
        },
        status,
        cache_control=NO_STORE["Cache-Control"],
    )


@router.get("/signin", include_in_schema=False)
async def signin_page(
    render: RenderDep,
    state: StateDep,
    account: AccountDep,
    next: str | None = None,
    email: str | None = None,
) -> Response:
    """The form; ``email`` pre-fills it (the link of an invitation mail)."""
    target = signin.safe_next(next)
    if account is not None:
        return RedirectResponse(target, status_code=303)
    return _signin_page(render, state, target, (email or "")[:320])


def _deliver(state: WebState, mail_id: int | None) -> None:
    """Off the request path: ask the job queue to send the sign-in mail now (it retries
    with backoff). Any failure leaves it in the outbox, where the outbox runs retry it."""
    if mail_id is None or not outbox.smtp_configured(state.settings):
        return
    try:
        state.jobs().enqueue("mail.deliver", ids=[mail_id], due_only=False)
    except Exception as exc:  # the queue's driver errors vary: the mail is safe
        log.error(
            "sign-in mail %d not queued for delivery (kept in the outbox): %s: %s",
            mail_id, exc.__class__.__name__, exc,
        )  # fmt: skip


@router.post("/signin", include_in_schema=False)
async def signin_form(
    request: Request,
    background: BackgroundTasks,
    render: RenderDep,
    state: StateDep,
    limiter: SigninLimiterDep,
    visitor: VisitorDep,
    ip: ClientIpDep,
) -> Response:
    form = await request.form(max_files=0, max_fields=10)
    email = (_field(form, "email") or "")[:400]
    target = signin.safe_next(_field(form, "next"))
    if not verify_csrf(request, _field(form, CSRF_FIELD)):
        return _signin_page(render, state, target, email, [STALE_FORM], 403)
    check_rate(limiter, visitor, ip, "Too many sign-in requests from here; try again shortly.")
    try:
        address = web_address(email)
    except ValidationError as exc:
        return _signin_page(render, state, target, email, exc.errors, 400)
    allowed = await run_in_threadpool(mail_gate, state, address)
    asked = await run_in_threadpool(
        signin.request_link, state.db, state.settings, address, target, mail_allowed=allowed
    )
    background.add_task(_deliver, state, asked.mail_id)
    response = render(
        "account/check_inbox.html",
        {"email": address, "outbox": not outbox.smtp_configured(state.settings)},
        cache_control=NO_STORE["Cache-Control"],
    )
    age = int(signin.LINK_TTL.total_seconds())
    _set_cookie(response, state, NONCE_COOKIE, asked.nonce, age)
    return response


def _signed_in(request: Request, state: WebState, done: signin.SignedIn) -> Response:
    """Start the session, give the browser's anonymous votes to the account, and land."""
    agent = request.headers.get("user-agent", "")
    secret = account_sessions.start_session(
        state.db, done.account.id, days=state.settings.session_days, agent=agent
    )
    visitor = visitor_id(request, create=False)
    if visitor:
        with state.db.session() as session:
            moved = vote_store.move_votes(session, visitor, voter_key(done.account.id))
        if moved:
            state.trending.invalidate()
    if done.created:
        account_policy.forget(state.db)
    response = RedirectResponse(done.next_path, status_code=303, headers=NO_STORE)
    _set_cookie(
        response,
        state,
        account_sessions.SESSION_COOKIE,
        secret,
        state.settings.session_days * 86400,
    )
    _clear_cookie(response, state, NONCE_COOKIE)
    return response


def _finish(request: Request, state: WebState, token: str) -> Response:
    done = signin.complete(state.db, state.settings, token)
    if done is None:
        raise HTTPException(400, EXPIRED, headers=NO_STORE)
    return _signed_in(request, state, done)


@router.get("/signin/link", include_in_schema=False)
def signin_link(request: Request, render: RenderDep, state: StateDep, token: str = "") -> Response:
    if not signin.link_is_live(state.db, token):
        raise HTTPException(400, EXPIRED, headers=NO_STORE)
    if signin.bound_to(state.db, token, request.cookies.get(NONCE_COOKIE)):
        return _finish(request, state, token)
    return render("account/confirm.html", {"token": token}, headers=NO_STORE, cache_control=None)


@router.post("/signin/link", include_in_schema=False)
async def signin_link_confirm(request: Request, state: StateDep) -> Response:
    form = await request.form(max_files=0, max_fields=5)
    if not verify_csrf(request, _field(form, CSRF_FIELD)):
        raise HTTPException(403, STALE_FORM)
    return await run_in_threadpool(_finish, request, state, _field(form, "token") or "")


async def _checked_form(request: Request, max_fields: int = 5) -> FormData:
    form = await request.form(max_files=0, max_fields=max_fields)
    if not verify_csrf(request, _field(form, CSRF_FIELD)):
        raise HTTPException(403, STALE_FORM)
    return form


@router.post("/signout", include_in_schema=False)
async def signout(request: Request, state: StateDep) -> Response:
    await _checked_form(request)
    secret = request.cookies.get(account_sessions.SESSION_COOKIE)
    await run_in_threadpool(account_sessions.end_session, state.db, secret)
    response = RedirectResponse("/", status_code=303)
    _clear_cookie(response, state, account_sessions.SESSION_COOKIE)
    return response


@router.post("/account/signout-everywhere", include_in_schema=False)
async def signout_everywhere(request: Request, state: StateDep, account: SignedInDep) -> Response:
    await _checked_form(request)
    await run_in_threadpool(account_sessions.end_all_sessions, state.db, account.id)
    response = RedirectResponse("/", status_code=303)
    _clear_cookie(response, state, account_sessions.SESSION_COOKIE)
    return response


def _settings_page(
    render: RenderDep,
    state: WebState,
    account: Account,
    *,
    new_token: str | None = None,
    message: str | None = None,
) -> Response:
    sub = manage.subscription_of(state.db, account)
    manage_url = tokens.manage_url(state.settings, sub.id, sub.email) if sub else None
    context = {
        "sub": sub,
        "manage_url": manage_url,
        "sessions": account_sessions.session_count(state.db, account.id),
        "tokens": account_sessions.tokens_of(state.db, account.id),
        "new_token": new_token,
        "message": message,
    }
    return render("account/settings.html", context, headers=NO_STORE, cache_control=None)


@router.get("/account", include_in_schema=False)
def account_page(render: RenderDep, state: StateDep, account: SignedInDep) -> Response:
    return _settings_page(render, state, account)


@router.post("/account/tokens", include_in_schema=False)
async def create_token(
    request: Request, render: RenderDep, state: StateDep, account: SignedInDep
) -> Response:
    form = await _checked_form(request)
    name = (_field(form, "name") or "").strip()
    if not name or len(name) > 100 or any(ord(c) < 32 for c in name):
        raise HTTPException(400, "A token needs a name of 1 to 100 characters.")
    token = await run_in_threadpool(account_sessions.new_token, state.db, account.id, name)
    return await run_in_threadpool(_settings_page, render, state, account, new_token=token)


@router.post("/account/tokens/{token_id}/revoke", include_in_schema=False)
async def revoke_token(
    request: Request, state: StateDep, account: SignedInDep, token_id: int
) -> Response:
    await _checked_form(request)
    if not await run_in_threadpool(account_sessions.revoke_token, state.db, account.id, token_id):
        raise HTTPException(404, "No such token.")
    return RedirectResponse("/account", status_code=303)


def _export_response(state: WebState, account: Account) -> Response:
    data = manage.export(state.db, account.id)
    body = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    return Response(
        body,
        media_type="application/json",
        headers={
            **NO_STORE,
            "Content-Disposition": 'attachment; filename="papersift-account.json"',
        },
    )


@router.get("/account/export", include_in_schema=False)
def account_export(state: StateDep, account: SignedInDep) -> Response:
    return _export_response(state, account)


@router.get("/account/delete", include_in_schema=False)
def delete_page(render: RenderDep, account: SignedInDep) -> Response:
    return render("account/delete.html", {"errors": []}, headers=NO_STORE, cache_control=None)


@router.post("/account/delete", include_in_schema=False)
async def delete_account(
    request: Request, render: RenderDep, state: StateDep, account: SignedInDep
) -> Response:
    form = await _checked_form(request)
    typed = (_field(form, "email") or "").strip().lower()
    if typed != account.email:
        errors = ["Type your account's address exactly to confirm."]
        return render("account/delete.html", {"errors": errors}, 400, cache_control=None)
    await run_in_threadpool(manage.delete_account, state.db, account.id)
    state.trending.invalidate()
    response = RedirectResponse("/", status_code=303)
    _clear_cookie(response, state, account_sessions.SESSION_COOKIE)
    return response


class AccountOut(BaseModel):
    id: int
    email: str
    name: str
    is_admin: bool


@api_router.get("/account", response_model=AccountOut, responses=problem_responses(401))
async def api_account(account: SignedInDep) -> AccountOut:
    """The account of the session cookie or of ``Authorization: Bearer <token>``."""
    return AccountOut(
        id=account.id, email=account.email, name=account.name, is_admin=account.is_admin
    )


@api_router.get(
    "/account/export",
    response_model=dict[str, Any],
    responses=problem_responses(401),
)
def api_account_export(state: StateDep, account: SignedInDep) -> JSONResponse:
    """Everything papersift holds about the account, as one JSON object."""
    return JSONResponse(jsonable_encoder(manage.export(state.db, account.id)), headers=NO_STORE)
