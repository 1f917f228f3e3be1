"""Sessions and API tokens as services: make one, resolve one to an Account, revoke.

The secrets are 256-bit random strings handed to the browser (cookie) or the reader
(token, shown once); the store keeps their hashes. A session's last-seen time is written
at most every ``TOUCH_EVERY``, so signed-in page views are reads.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from papersift.accounts import Account
from papersift.store import credentials
from papersift.store import users as user_store
from papersift.store.db import Database

SESSION_COOKIE = "ps_session"
TOKEN_PREFIX = "pst_"
TOUCH_EVERY = timedelta(minutes=10)
MAX_SECRET = 200  # longer cookies and tokens are not ours: not even hashed


def start_session(db: Database, account_id: int, *, days: int, agent: str = "") -> str:
    """A new session for the account; the secret goes into the cookie."""
    secret = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with db.session() as session:
        credentials.add_session(session, secret, account_id, now, now + timedelta(days=days), agent)
        user_store.touch_user(session, account_id, now)
    return secret


def session_account(db: Database, secret: str | None) -> Account | None:
    """The account a session cookie names, or None (unknown, expired, revoked)."""
    if not secret or len(secret) > MAX_SECRET:
        return None
    now = datetime.now(UTC)
    with db.session() as session:
        hit = credentials.session_user(session, secret, now)
        if hit is None:
            return None
        if now - hit.last_seen_at > TOUCH_EVERY:
            credentials.touch_session(session, secret, now)
            user_store.touch_user(session, hit.user.id, now)
        return user_store.account_of(hit.user)


def end_session(db: Database, secret: str | None) -> None:
    if secret and len(secret) <= MAX_SECRET:
        with db.session() as session:
            credentials.delete_session(session, secret)


def end_all_sessions(db: Database, account_id: int) -> int:
    """Sign out everywhere: every session of the account; how many there were."""
    with db.session() as session:
        return credentials.delete_sessions_of(session, account_id)


def new_token(db: Database, account_id: int, name: str) -> str:
    """A new personal API token (returned once, stored hashed)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.session() as session:
        credentials.add_token(session, account_id, name.strip()[:100] or "token", token, now())
    return token


def token_account(db: Database, token: str | None) -> Account | None:
    """The account of a personal API token, or None."""
    if not token or len(token) > MAX_SECRET or not token.startswith(TOKEN_PREFIX):
        return None
    with db.session() as session:
        found = credentials.token_user(session, token)
        if found is None:
            return None
        user, row = found
        at = now()
        if row.last_used_at is None or at - row.last_used_at > TOUCH_EVERY:
            credentials.touch_token(session, row.id, at)
        return user_store.account_of(user)


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class TokenInfo:
    """A token as the settings page lists it (never the secret)."""

    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None


def tokens_of(db: Database, account_id: int) -> list[TokenInfo]:
    with db.session() as session:
        return [
            TokenInfo(t.id, t.name, t.prefix, t.created_at, t.last_used_at)
            for t in credentials.tokens_of(session, account_id)
        ]


def revoke_token(db: Database, account_id: int, token_id: int) -> bool:
    with db.session() as session:
        return credentials.delete_token(session, account_id, token_id)


def session_count(db: Database, account_id: int) -> int:
    with db.session() as session:
        return len(credentials.sessions_of(session, account_id))
