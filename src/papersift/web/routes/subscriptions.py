"""Digest subscriptions on the web: sign-up form and API, confirm, manage, unsubscribe.

- ``GET/POST /subscribe``: the form (CSRF-protected, rate limited). Whatever the address,
  the answer is "check your inbox": the page never reveals who is subscribed.
- ``POST /api/v1/subscriptions``: the same as JSON, answering 202.
- ``GET /subscriptions/confirm?token=``: the double opt-in link from the mail shows a
  button; its ``POST`` confirms. Mail scanners (Safe Links and the like) fetch every link
  in a message, so a GET that confirmed would sign up anyone whose address was typed in.
- ``GET/POST /subscriptions/manage?token=``: preferences, through the signed link in every
  digest.
- ``GET /unsubscribe?token=`` shows a button; ``POST`` unsubscribes. The POST needs no page
  and no CSRF token, so mail clients' RFC 8058 one-click POST (body
  ``List-Unsubscribe=One-Click``) works: the signed token is the proof.

Forged, damaged or expired links get a 400 page (problem+json under /api). The work is
done by ``papersift.digest.subscriptions``; this module only parses and renders.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.responses import Response

from papersift.digest import subscriptions as subs
from papersift.digest import tokens
from papersift.digest.smtp import SmtpConfigError, SmtpError
from papersift.digest.tokens import TokenError
from papersift.digest.validation import (
    FREQUENCIES,
    MAX_PAPERS_LIMIT,
    Preferences,
    ValidationError,
    clean_preferences,
    normalize_email,
)
from papersift.store import collections as collection_store
from papersift.web.deps import client_ip, db_of, settings_of
from papersift.web.problems import error_page, problem
from papersift.web.ratelimit import Limit, RateLimiter, store_path
from papersift.web.security import CSRF_FIELD, verify_csrf, visitor_id

log = logging.getLogger("papersift.web")

router = APIRouter()

PAGE_CACHE = "private, no-store"  # pages carry signed links: never cache them
MAX_FIELDS = 60
# Sign-ups: a burst of 5 then one a minute per visitor; an IP gets 4x that.
SIGNUP_LIMITS = (Limit(capacity=5, rate=1 / 60), Limit(capacity=20, rate=4 / 60))
_limiters: dict[int, RateLimiter] = {}


def _limiter(request: Request) -> RateLimiter:
    """One limiter per app (kept here so the app factory needs no digest knowledge)."""
    key = id(request.app)
    if key not in _limiters:
        home = request.app.state.settings.home
        _limiters[key] = RateLimiter(*SIGNUP_LIMITS, store=store_path(home), scope="signups")
    return _limiters[key]


def _check_rate(request: Request) -> None:
    wait = _limiter(request).check(visitor_id(request, create=False), client_ip(request))
    if wait:
        raise HTTPException(
            429,
            "Too many sign-ups from here; try again in a minute.",
            headers={"Retry-After": str(wait)},
        )


def _render(request: Request, name: str, context: dict, status_code: int = 200) -> Response:
    response = request.app.state.templates.TemplateResponse(
        request, f"subscriptions/{name}", context, status_code=status_code
    )
    response.headers["Cache-Control"] = PAGE_CACHE
    response.headers["Referrer-Policy"] = "no-referrer"  # tokens are in these URLs
    return response


async def _posted_token(request: Request, token: str | None) -> str | None:
    """The signed token of a POST: from the query string, else from the form."""
    if token is not None:
        return token
    form = await request.form(max_files=0, max_fields=5)
    value = form.get("token")
    return value if isinstance(value, str) else None


def _token_error(request: Request, exc: TokenError) -> Response:
    response = error_page(request, 400, str(exc).capitalize() + ".")
    response.headers["Cache-Control"] = PAGE_CACHE
    return response


def _collections(request: Request) -> list[tuple[str, int]]:
    with db_of(request).session() as s:
        return [(name, size) for name, _o, size in collection_store.collection_sizes(s)]


def _send_signup(settings: Any, result: subs.SignupResult) -> None:
    """Background task: mail the confirmation (or 'already subscribed') note."""
    try:
        subs.send_signup_mail(settings, result, throttle=True)
    except (SmtpError, SmtpConfigError, OSError) as exc:
        log.warning("could not send the sign-up mail to %s: %s", result.subscriber.email, exc)


def _lines(value: str) -> list[str]:
    """One topic per textarea line; a lone CR stays in and is rejected as a control char."""
    return value.replace("\r\n", "\n").split("\n")


def _form_preferences(form: FormData) -> tuple[Preferences, list[str]]:
    """Preferences from form fields (topics one per line, or repeated ``topic`` fields)."""
    topics: list[str] = []
    for raw in form.getlist("topic"):
        if isinstance(raw, str):
            topics.append(raw)  # a single-line field: CR/LF inside is an error, not a split
    for raw in form.getlist("topics"):
        if isinstance(raw, str):
            topics.extend(_lines(raw))
    collections = [c for c in form.getlist("collection") if isinstance(c, str)]
    frequency = form.get("frequency") or "daily"
    max_papers = form.get("max_papers") or "20"
    send_empty = form.get("send_empty") in ("1", "on", "true")
    try:
        prefs = clean_preferences(
            topics=topics,
            collections=collections,
            frequency=frequency,
            max_papers=max_papers,
            send_empty=send_empty,
        )
        return prefs, []
    except ValidationError as exc:
        fallback = Preferences(
            topics=[t for t in topics if isinstance(t, str)][:20], collections=collections[:20]
        )
        return fallback, exc.errors


def _form_context(request: Request, prefs: Preferences, **extra: Any) -> dict:
    return {
        "prefs": prefs,
        "collections": _collections(request),
        "frequencies": FREQUENCIES,
        "max_limit": MAX_PAPERS_LIMIT,
        "csrf_field": CSRF_FIELD,
        **extra,
    }


# -- sign-up ---------------------------------------------------------------------------------
@router.get("/subscribe", include_in_schema=False)
def subscribe_page(request: Request, topic: str | None = None) -> Response:
    prefs = Preferences()
    if topic:
        try:
            prefs.topics = clean_preferences(topics=[topic]).topics
        except ValidationError:
            pass
    return _render(request, "subscribe.html", _form_context(request, prefs, email="", errors=[]))


@router.post("/subscribe", include_in_schema=False)
async def subscribe_form(request: Request, background: BackgroundTasks) -> Response:
    form = await request.form(max_files=0, max_fields=MAX_FIELDS)
    email = form.get("email")
    email = email if isinstance(email, str) else ""
    prefs, errors = _form_preferences(form)
    token = form.get(CSRF_FIELD)
    if not verify_csrf(request, token if isinstance(token, str) else None):
        errors = [
            "This form has expired or did not come from this site; please submit it again."
        ] + errors
        ctx = _form_context(request, prefs, email=email, errors=errors)
        return _render(request, "subscribe.html", ctx, status_code=403)
    _check_rate(request)
    try:
        normalize_email(email)
    except ValidationError as exc:
        errors = exc.errors + errors
    if not errors:
        try:
            result = await run_in_threadpool(subs.subscribe, db_of(request), email, prefs)
        except ValidationError as exc:
            errors = exc.errors
    if errors:
        ctx = _form_context(request, prefs, email=email, errors=errors)
        return _render(request, "subscribe.html", ctx, status_code=400)
    background.add_task(_send_signup, settings_of(request), result)
    return _render(request, "check_inbox.html", {"email": result.subscriber.email})


class SubscriptionIn(BaseModel):
    """A sign-up; the address gets a confirmation link before any digest is sent."""

    email: str = Field(max_length=320, examples=["you@example.org"])
    topics: list[str] = Field(
        default_factory=list, max_length=50, examples=[["sparse attention", "quantization"]]
    )
    collections: list[str] = Field(default_factory=list, max_length=50)
    frequency: str = Field("daily", examples=["daily"], description="daily or weekly")
    max_papers: int = Field(20, ge=1, le=MAX_PAPERS_LIMIT)
    send_empty: bool = Field(False, description="also mail when there is nothing new")


class SubscriptionAccepted(BaseModel):
    status: str = Field(examples=["pending"])
    detail: str


@router.post(
    "/api/v1/subscriptions",
    status_code=202,
    response_model=SubscriptionAccepted,
    tags=["api"],
    responses={
        422: {"description": "invalid subscription"},
        429: {"description": "too many sign-ups"},
    },
)
async def subscribe_api(body: SubscriptionIn, request: Request, background: BackgroundTasks) -> Any:
    """Subscribe an address to the digest (double opt-in: a confirmation mail goes out).

    The answer is the same whether or not the address was already subscribed."""
    try:
        prefs = clean_preferences(
            topics=body.topics,
            collections=body.collections,
            frequency=body.frequency,
            max_papers=body.max_papers,
            send_empty=body.send_empty,
        )
    except ValidationError as exc:
        return problem(422, "invalid subscription", instance=request.url.path, errors=exc.errors)
    _check_rate(request)
    try:
        result = await run_in_threadpool(subs.subscribe, db_of(request), body.email, prefs)
    except ValidationError as exc:
        return problem(422, "invalid subscription", instance=request.url.path, errors=exc.errors)
    background.add_task(_send_signup, settings_of(request), result)
    return SubscriptionAccepted(
        status="pending",
        detail="If the address can receive mail, a message with a link is on its way.",
    )


# -- confirm -----------------------------------------------------------------------------------
@router.get("/subscriptions/confirm", include_in_schema=False)
def confirm_page(request: Request, token: str | None = None) -> Response:
    settings = settings_of(request)
    try:
        sub = subs.confirmation(db_of(request), settings, token)
    except TokenError as exc:
        return _token_error(request, exc)
    if sub.status == subs.CONFIRMED:
        return _confirmed(request, sub, changed=False)
    return _render(request, "confirm.html", {"sub": sub, "token": token})


@router.post("/subscriptions/confirm", include_in_schema=False)
async def confirm_post(request: Request, token: str | None = None) -> Response:
    """Confirm from the page's button; the signed token is the proof (no CSRF token needed:
    a forged request could only confirm an address its owner asked to subscribe)."""
    token = await _posted_token(request, token)
    try:
        sub, changed = await run_in_threadpool(
            subs.confirm, db_of(request), settings_of(request), token
        )
    except TokenError as exc:
        return _token_error(request, exc)
    return _confirmed(request, sub, changed=changed)


def _confirmed(request: Request, sub: subs.Subscriber, *, changed: bool) -> Response:
    return _render(
        request,
        "confirmed.html",
        {
            "sub": sub,
            "changed": changed,
            "manage_url": tokens.manage_url(settings_of(request), sub.id, sub.email),
        },
    )


# -- manage ------------------------------------------------------------------------------------
def _manage_context(
    request: Request, sub: subs.Subscriber, token: str, prefs: Preferences, **extra: Any
) -> dict:
    settings = settings_of(request)
    return _form_context(
        request,
        prefs,
        sub=sub,
        token=token,
        unsubscribe_url=tokens.unsubscribe_url(settings, sub.id, sub.email),
        **extra,
    )


@router.get("/subscriptions/manage", include_in_schema=False)
def manage_page(request: Request, token: str | None = None) -> Response:
    try:
        sub = subs.subscriber_for_token(db_of(request), settings_of(request), tokens.MANAGE, token)
    except TokenError as exc:
        return _token_error(request, exc)
    return _render(
        request,
        "manage.html",
        _manage_context(request, sub, token or "", sub.preferences, errors=[], saved=False),
    )


@router.post("/subscriptions/manage", include_in_schema=False)
async def manage_save(request: Request, token: str | None = None) -> Response:
    form = await request.form(max_files=0, max_fields=MAX_FIELDS)
    token = token or (form.get("token") if isinstance(form.get("token"), str) else None)
    db, settings = db_of(request), settings_of(request)
    try:
        sub = subs.subscriber_for_token(db, settings, tokens.MANAGE, token)
    except TokenError as exc:
        return _token_error(request, exc)
    prefs, errors = _form_preferences(form)
    csrf = form.get(CSRF_FIELD)
    if not verify_csrf(request, csrf if isinstance(csrf, str) else None):
        errors = ["This form has expired; please save again."] + errors
        return _render(
            request,
            "manage.html",
            _manage_context(request, sub, token or "", prefs, errors=errors, saved=False),
            status_code=403,
        )
    if not errors:
        try:
            if form.get("action") == "resume":
                sub = await run_in_threadpool(subs.resume, db, settings, token)
            else:
                sub = await run_in_threadpool(subs.update_preferences, db, settings, token, prefs)
        except ValidationError as exc:
            errors = exc.errors
        except TokenError as exc:
            return _token_error(request, exc)
    if errors:
        return _render(
            request,
            "manage.html",
            _manage_context(request, sub, token or "", prefs, errors=errors, saved=False),
            status_code=400,
        )
    return _render(
        request,
        "manage.html",
        _manage_context(request, sub, token or "", sub.preferences, errors=[], saved=True),
    )


# -- unsubscribe -------------------------------------------------------------------------------
@router.get("/unsubscribe", include_in_schema=False)
def unsubscribe_page(request: Request, token: str | None = None) -> Response:
    settings = settings_of(request)
    try:
        sub = subs.subscriber_for_token(db_of(request), settings, tokens.UNSUBSCRIBE, token)
    except TokenError as exc:
        return _token_error(request, exc)
    return _render(
        request, "unsubscribe.html", {"sub": sub, "token": token, "done": False, "changed": False}
    )


@router.post("/unsubscribe", include_in_schema=False)
async def unsubscribe_post(request: Request, token: str | None = None) -> Response:
    """Unsubscribe: from the page's button or a mail client's RFC 8058 one-click POST."""
    token = await _posted_token(request, token)
    db, settings = db_of(request), settings_of(request)
    try:
        sub, changed = await run_in_threadpool(subs.unsubscribe, db, settings, token)
    except TokenError as exc:
        return _token_error(request, exc)
    return _render(
        request,
        "unsubscribe.html",
        {
            "sub": sub,
            "token": token,
            "done": True,
            "changed": changed,
            "manage_url": tokens.manage_url(settings, sub.id, sub.email),
        },
    )
