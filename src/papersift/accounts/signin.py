"""Passwordless sign-in: a one-time link by mail, then a server-side session.

``request_link`` writes the link's row and its mail to the outbox in one transaction
(durable like the sign-up mail). The link works once and for ``LINK_TTL``. It is bound to
the browser that asked: that browser holds a random nonce in a cookie, and only the
link's hash and the nonce's hash are stored. Opened elsewhere (another device, or a mail
scanner fetching every link) it only shows a button; the sign-in happens on its POST, so
no GET from a scanner signs anyone in.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from urllib.parse import urlencode

from markupsafe import escape
from sqlalchemy.orm import Session

from papersift.accounts import Account, normalize_email, policy
from papersift.digest import mail as digest_mail
from papersift.digest import outbox
from papersift.settings import Settings
from papersift.store import credentials
from papersift.store import users as user_store
from papersift.store.db import Database
from papersift.store.schema_accounts import UserRow

LINK_TTL = timedelta(minutes=15)
SIGNIN_KIND = "signin"


@dataclass
class LinkRequest:
    """What asking for a link did: the browser's nonce (always, so the answer looks the
    same whoever asked) and the outbox id of the mail, if one was written."""

    nonce: str
    mail_id: int | None


def safe_next(value: object) -> str:
    """A path on this site to land on after signing in (never another host)."""
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or value.startswith("//")
        or len(value) > 500
        or "\\" in value
        or any(ord(c) < 32 or ord(c) == 127 for c in value)
        or value.startswith(("/signin", "/signout"))
    ):
        return "/"
    return value


def link_url(settings: Settings, token: str) -> str:
    return f"{settings.base_url}/signin/link?{urlencode({'token': token})}"


def signin_message(settings: Settings, email: str, url: str, *, new: bool) -> EmailMessage:
    what = "create your papersift account and sign in" if new else "sign in to papersift"
    text = (
        f"Open this link to {what}:\n\n{url}\n\n"
        f"It works once, for {int(LINK_TTL.total_seconds() // 60)} minutes. If you did not "
        "ask for it, ignore this mail: nothing happens without the link.\n"
    )
    html = (
        f"<p>Open this link to {escape(what)}:</p>"
        f'<p><a href="{escape(url)}">Sign in to papersift</a></p>'
        f"<p>It works once, for {int(LINK_TTL.total_seconds() // 60)} minutes. If you did "
        "not ask for it, ignore this mail: nothing happens without the link.</p>"
    )
    return digest_mail.new_message(settings, email, "Your papersift sign-in link", text, html)


def request_link(
    db: Database, settings: Settings, email: str, next_path: str, *, mail_allowed: bool = True
) -> LinkRequest:
    """Ask for a sign-in link for ``email`` (validated by the caller). A link and its mail
    are made only when the address has an account or may create one, and the mail limits
    allow (``mail_allowed``); the caller answers the same in every case."""
    address = normalize_email(email)
    nonce = secrets.token_urlsafe(24)
    if not mail_allowed:
        return LinkRequest(nonce, None)
    now = datetime.now(UTC)
    with db.session() as session:
        user = user_store.user_by_email(session, address)
        if user is None and policy.signup_refusal(session, settings, address) is not None:
            return LinkRequest(nonce, None)
        token = secrets.token_urlsafe(32)
        credentials.add_signin_link(
            session, token, address, nonce, safe_next(next_path), now, now + LINK_TTL
        )
        url = link_url(settings, token)
        msg = signin_message(settings, address, url, new=user is None)
        mail_id = outbox.queue(session, msg, kind=SIGNIN_KIND, link=url)
    return LinkRequest(nonce, mail_id)


def link_is_live(db: Database, token: str | None) -> bool:
    if not token or len(token) > 200:
        return False
    with db.session() as session:
        return credentials.live_link(session, token, datetime.now(UTC)) is not None


def bound_to(db: Database, token: str, nonce: str | None) -> bool:
    """Whether the live link ``token`` was asked for by the browser holding ``nonce``."""
    if not nonce or len(nonce) > 200 or len(token) > 200:
        return False
    with db.session() as session:
        link = credentials.live_link(session, token, datetime.now(UTC))
        return link is not None and credentials.nonce_matches(link, nonce)


@dataclass
class SignedIn:
    account: Account
    next_path: str
    created: bool  # the account was made by this sign-in


def complete(db: Database, settings: Settings, token: str) -> SignedIn | None:
    """Spend the link and return its account (made now if the address may sign up;
    the first account of a deployment is an admin). None when the link is not live or
    the address may no longer sign up."""
    if not token or len(token) > 200:
        return None
    now = datetime.now(UTC)
    with db.session() as session:
        link = credentials.use_link(session, token, now)
        if link is None:
            return None
        credentials.prune_expired(session, now)  # old links and sessions: cheap, indexed
        user = user_store.user_by_email(session, link.email)
        created = False
        if user is None:
            if policy.signup_refusal(session, settings, link.email) is not None:
                return None
            user = _create(session, link.email)
            created = True
        return SignedIn(user_store.account_of(user), link.next_path, created)


def _create(session: Session, email: str) -> UserRow:
    first = user_store.user_count(session) == 0
    try:
        user = user_store.create_user(session, email, is_admin=first)
    except user_store.UserExists:  # a concurrent sign-in of the same address made it
        found = user_store.user_by_email(session, email)
        assert found is not None
        return found
    user_store.mark_invite_used(session, email, datetime.now(UTC))
    return user
