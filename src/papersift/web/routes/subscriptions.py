"""Digest subscriptions on the web: sign-up form and API, confirm, manage, unsubscribe.

- ``GET/POST /subscribe``: the form (CSRF-protected, rate limited). Whatever the address,
  the answer is "check your inbox": the page never reveals who is subscribed.
- ``POST /api/v1/subscriptions``: the same as JSON, answering 202.
- Sign-up mail is limited beyond the per-visitor and per-address buckets: one inbox (its
  ``+tag`` removed) gets one mail per 10 minutes (quietly: the answer is the same), one
  domain a quarter of ``signup_mails_per_hour``, everyone together all of it (429 past
  those); addresses need a dotted domain.
- ``GET /subscriptions/confirm?token=``: the double opt-in link from the mail shows a
  button; its ``POST`` confirms. Mail scanners (Safe Links and the like) fetch every link
  in a message, so a GET that confirmed would sign up anyone whose address was typed in.
- ``GET/POST /subscriptions/manage?token=``: preferences, through the signed link in every
  digest.
- ``GET /unsubscribe?token=`` shows a button; ``POST`` unsubscribes. The POST needs no page
  and no CSRF token, so mail clients' RFC 8058 one-click POST (body
  ``List-Unsubscribe=One-Click``) works: the signed token is the proof.

Forged, damaged or expired links (``TokenError``) get the app's 400 page. The work is
done by ``papersift.digest.subscriptions``; this module only parses and renders.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.responses import Response

from papersift.digest import outbox, tokens
from papersift.digest import subscriptions as subs
from papersift.digest.outbox import SignupMail
from papersift.digest.validation import (
    FREQUENCIES,
    MAX_PAPERS_LIMIT,
    Preferences,
    ValidationError,
    clean_preferences,
    normalize_email,
)
from papersift.settings import Settings
from papersift.store import collections as collection_store
from papersift.store.db import Database
from papersift.web.deps import (
    ClientIpDep,
    DbDep,
    RenderDep,
    Renderer,
    SettingsDep,
    StateDep,
    VisitorDep,
)
from papersift.web.problems import ProblemResponse, problem
from papersift.web.ratelimit import Limit, RateLimiter
from papersift.web.resources import check_rate
from papersift.web.schemas import SubscriptionAccepted, SubscriptionIn
from papersift.web.security import CSRF_FIELD, verify_csrf
from papersift.web.state import WebState

log = logging.getLogger("papersift.web")

router = APIRouter()

PAGE_CACHE = "private, no-store"  # pages carry signed links: never cache them
NO_REFERRER = {"Referrer-Policy": "no-referrer"}  # tokens are in these URLs
MAX_FIELDS = 60
# Sign-ups: a burst of 5 then one a minute per visitor; an IP gets 4x that.
SIGNUP_LIMITS = (Limit(capacity=5, rate=1 / 60), Limit(capacity=20, rate=4 / 60))
TOO_MANY = "Too many sign-ups from here; try again in a minute."


async def signup_limiter(state: StateDep) -> RateLimiter:
    """The app's sign-up limiter (made on first use, shared by the app's workers)."""
    return state.limiter("signups", SIGNUP_LIMITS)


class Pages:
    """The subscription pages of one request: never cached, no referrer, and the form's
    choices (collections, frequencies) filled in."""

    def __init__(
        self, request: Request, render: Renderer, db: Database, settings: Settings
    ) -> None:
        self.request = request
        self.render_page = render
        self.db = db
        self.settings = settings

    def render(self, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
        return self.render_page(
            f"subscriptions/{name}",
            context,
            status_code,
            cache_control=PAGE_CACHE,
            headers=NO_REFERRER,
        )

    def _collections(self) -> list[tuple[str, int]]:
        with self.db.session() as s:
            return [(name, size) for name, _o, size in collection_store.collection_sizes(s)]

    def form_context(self, prefs: Preferences, **extra: Any) -> dict[str, Any]:
        return {
            "prefs": prefs,
            "collections": self._collections(),
            "frequencies": FREQUENCIES,
            "max_limit": MAX_PAPERS_LIMIT,
            "csrf_field": CSRF_FIELD,
            **extra,
        }

    def manage(
        self,
        sub: subs.Subscriber,
        token: str,
        prefs: Preferences,
        errors: list[str],
        *,
        saved: bool = False,
        status_code: int = 200,
    ) -> Response:
        context = self.form_context(
            prefs,
            sub=sub,
            token=token,
            unsubscribe_url=tokens.unsubscribe_url(self.settings, sub.id, sub.email),
            errors=errors,
            saved=saved,
        )
        return self.render("manage.html", context, status_code)

    def confirmed(self, sub: subs.Subscriber, *, changed: bool) -> Response:
        manage_url = tokens.manage_url(self.settings, sub.id, sub.email)
        return self.render(
            "confirmed.html", {"sub": sub, "changed": changed, "manage_url": manage_url}
        )


async def get_pages(request: Request, render: RenderDep, db: DbDep, settings: SettingsDep) -> Pages:
    return Pages(request, render, db, settings)


PagesDep = Annotated[Pages, Depends(get_pages)]
SignupLimiterDep = Annotated[RateLimiter, Depends(signup_limiter)]


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


async def _posted_token(request: Request, token: str | None) -> str | None:
    """The signed token of a POST: from the query string, else from the form."""
    if token is not None:
        return token
    return _field(await request.form(max_files=0, max_fields=5), "token")


class GatedSignupMail(SignupMail):
    """A sign-up's mail, not written when the address (its ``+tag`` removed) had one
    recently: the sign-up is recorded and the answer is the same, but no mail goes out."""

    def __init__(self, settings: Settings, *, allowed: bool) -> None:
        super().__init__(settings)
        self.allowed = allowed

    def __call__(self, session: Any, result: subs.SignupResult) -> None:
        if not self.allowed:
            self.throttled = True
            return
        super().__call__(session, result)


def web_address(raw: str) -> str:
    """The address as the web accepts it: valid, and with a dotted domain (a public mail
    domain; ``root@localhost`` can still be added by an operator on the command line)."""
    address = normalize_email(raw)
    if "." not in address.rsplit("@", 1)[1]:
        raise ValidationError(
            f"{address!r} needs a full mail domain with a dot (like example.org): "
            "local addresses cannot sign up on the web"
        )
    return address


def mail_keys(address: str) -> tuple[str, str]:
    """(the address without its ``+tag``, its domain): what the sign-up mail limits count,
    so victim+1@, victim+2@ ... are one inbox."""
    local, domain = address.rsplit("@", 1)
    return f"{local.split('+', 1)[0]}@{domain}", domain


def mail_gate(state: WebState, address: str) -> bool:
    """Whether this sign-up may write a mail: False (quietly) when the same inbox got one
    in the last ``SIGNUP_MAIL_INTERVAL`` s; 429 when the domain (a quarter of the budget)
    or everyone together (``signup_mails_per_hour``) had too many this hour."""
    inbox, domain = mail_keys(address)
    interval = subs.SIGNUP_MAIL_INTERVAL
    per_inbox = state.key_limiter("signup-inbox", Limit(capacity=1, rate=1 / interval))
    if per_inbox.take(inbox):
        return False
    hourly = state.settings.signup_mails_per_hour
    share = max(5, hourly // 4)
    per_domain = state.key_limiter(f"signup-domain/{share}", Limit(share, share / 3600))
    wait = per_domain.take(domain)
    if wait:
        raise HTTPException(
            429,
            f"Too many sign-ups for addresses at {domain} this hour; try again later.",
            headers={"Retry-After": str(wait)},
        )
    overall = state.key_limiter(f"signup-all/{hourly}", Limit(hourly, hourly / 3600))
    wait = overall.take("all")
    if wait:
        raise HTTPException(
            429,
            "Too many sign-ups this hour; try again later.",
            headers={"Retry-After": str(wait)},
        )
    return True


def _signup(
    db: Database, settings: Settings, email: str, prefs: Preferences, *, allowed: bool = True
) -> SignupMail:
    """Record the sign-up and write its mail to the outbox, in one transaction."""
    mail = GatedSignupMail(settings, allowed=allowed)
    subs.subscribe(db, email, prefs, on_signup=mail)
    return mail


def _deliver(state: WebState, mail: SignupMail) -> None:
    """Background task, off the request path: ask the job queue to deliver the sign-up's
    mail now (the queue retries it with backoff). The outbox row is the durable record: a
    queue that cannot be reached leaves the mail there for the next outbox run."""
    if mail.id is None or not outbox.smtp_configured(state.settings):
        return
    try:
        state.jobs().enqueue("mail.deliver", ids=[mail.id], due_only=False)
    except Exception as exc:  # the queue's driver errors vary; the mail is safe either way
        log.error(
            "sign-up mail %d not queued for delivery (kept in the outbox, retried later): %s: %s",
            mail.id,
            exc.__class__.__name__,
            exc,
        )


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
    frequency = _field(form, "frequency") or "daily"
    max_papers = _field(form, "max_papers") or "20"
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


# -- sign-up ---------------------------------------------------------------------------------
@router.get("/subscribe", include_in_schema=False)
def subscribe_page(pages: PagesDep, topic: str | None = None) -> Response:
    prefs = Preferences()
    if topic:
        try:
            prefs.topics = clean_preferences(topics=[topic]).topics
        except ValidationError:
            pass
    return pages.render("subscribe.html", pages.form_context(prefs, email="", errors=[]))


@router.post("/subscribe", include_in_schema=False)
async def subscribe_form(
    request: Request,
    background: BackgroundTasks,
    pages: PagesDep,
    limiter: SignupLimiterDep,
    visitor: VisitorDep,
    ip: ClientIpDep,
    state: StateDep,
) -> Response:
    form = await request.form(max_files=0, max_fields=MAX_FIELDS)
    email = _field(form, "email") or ""
    prefs, errors = _form_preferences(form)
    if not verify_csrf(request, _field(form, CSRF_FIELD)):
        errors = [
            "This form has expired or did not come from this site; please submit it again."
        ] + errors
        ctx = pages.form_context(prefs, email=email, errors=errors)
        return pages.render("subscribe.html", ctx, status_code=403)
    check_rate(limiter, visitor, ip, TOO_MANY)
    try:
        web_address(email)
    except ValidationError as exc:
        errors = exc.errors + errors
    if not errors:
        allowed = await run_in_threadpool(mail_gate, state, web_address(email))
        try:
            mail = await run_in_threadpool(
                _signup, pages.db, pages.settings, email, prefs, allowed=allowed
            )
        except ValidationError as exc:
            errors = exc.errors
    if errors:
        ctx = pages.form_context(prefs, email=email, errors=errors)
        return pages.render("subscribe.html", ctx, status_code=400)
    background.add_task(_deliver, state, mail)
    context = {
        "email": normalize_email(email),
        "outbox": not outbox.smtp_configured(pages.settings),
    }
    return pages.render("check_inbox.html", context)


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
async def subscribe_api(
    body: SubscriptionIn,
    request: Request,
    background: BackgroundTasks,
    db: DbDep,
    settings: SettingsDep,
    limiter: SignupLimiterDep,
    visitor: VisitorDep,
    ip: ClientIpDep,
    state: StateDep,
) -> SubscriptionAccepted | ProblemResponse:
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
    check_rate(limiter, visitor, ip, TOO_MANY)
    try:
        address = web_address(body.email)
        allowed = await run_in_threadpool(mail_gate, state, address)
        mail = await run_in_threadpool(_signup, db, settings, address, prefs, allowed=allowed)
    except ValidationError as exc:
        return problem(422, "invalid subscription", instance=request.url.path, errors=exc.errors)
    background.add_task(_deliver, state, mail)
    return SubscriptionAccepted(
        status="pending",
        detail="If the address can receive mail, a message with a link is on its way.",
    )


# -- confirm -----------------------------------------------------------------------------------
@router.get("/subscriptions/confirm", include_in_schema=False)
def confirm_page(pages: PagesDep, token: str | None = None) -> Response:
    sub = subs.confirmation(pages.db, pages.settings, token)
    if sub.status == subs.CONFIRMED:
        return pages.confirmed(sub, changed=False)
    return pages.render("confirm.html", {"sub": sub, "token": token})


@router.post("/subscriptions/confirm", include_in_schema=False)
async def confirm_post(request: Request, pages: PagesDep, token: str | None = None) -> Response:
    """Confirm from the page's button; the signed token is the proof (no CSRF token needed:
    a forged request could only confirm an address its owner asked to subscribe)."""
    token = await _posted_token(request, token)
    sub, changed = await run_in_threadpool(subs.confirm, pages.db, pages.settings, token)
    return pages.confirmed(sub, changed=changed)


# -- manage ------------------------------------------------------------------------------------
@router.get("/subscriptions/manage", include_in_schema=False)
def manage_page(pages: PagesDep, token: str | None = None) -> Response:
    sub = subs.subscriber_for_token(pages.db, pages.settings, tokens.MANAGE, token)
    return pages.manage(sub, token or "", sub.preferences, [])


@router.post("/subscriptions/manage", include_in_schema=False)
async def manage_save(request: Request, pages: PagesDep, token: str | None = None) -> Response:
    form = await request.form(max_files=0, max_fields=MAX_FIELDS)
    token = token or _field(form, "token")
    db, settings = pages.db, pages.settings
    sub = subs.subscriber_for_token(db, settings, tokens.MANAGE, token)
    prefs, errors = _form_preferences(form)
    if not verify_csrf(request, _field(form, CSRF_FIELD)):
        errors = ["This form has expired; please save again."] + errors
        return pages.manage(sub, token or "", prefs, errors, status_code=403)
    if not errors:
        try:
            if form.get("action") == "resume":
                sub = await run_in_threadpool(subs.resume, db, settings, token)
            else:
                sub = await run_in_threadpool(subs.update_preferences, db, settings, token, prefs)
        except ValidationError as exc:
            errors = exc.errors
    if errors:
        return pages.manage(sub, token or "", prefs, errors, status_code=400)
    return pages.manage(sub, token or "", sub.preferences, [], saved=True)


# -- unsubscribe -------------------------------------------------------------------------------
@router.get("/unsubscribe", include_in_schema=False)
def unsubscribe_page(pages: PagesDep, token: str | None = None) -> Response:
    sub = subs.subscriber_for_token(pages.db, pages.settings, tokens.UNSUBSCRIBE, token)
    return pages.render(
        "unsubscribe.html", {"sub": sub, "token": token, "done": False, "changed": False}
    )


@router.post("/unsubscribe", include_in_schema=False)
async def unsubscribe_post(request: Request, pages: PagesDep, token: str | None = None) -> Response:
    """Unsubscribe: from the page's button or a mail client's RFC 8058 one-click POST."""
    token = await _posted_token(request, token)
    sub, changed = await run_in_threadpool(subs.unsubscribe, pages.db, pages.settings, token)
    return pages.render(
        "unsubscribe.html",
        {
            "sub": sub,
            "token": token,
            "done": True,
            "changed": changed,
            "manage_url": tokens.manage_url(pages.settings, sub.id, sub.email),
        },
    )
