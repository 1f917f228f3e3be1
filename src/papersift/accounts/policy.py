"""Who may sign up, and whether anonymous visitors may vote.

A deployment "has accounts" once anyone can sign up (``signup_policy`` is not ``closed``)
or any user exists (an operator ran ``papersift users add``). From then on a vote is an
account's, unless ``anonymous_votes`` says otherwise; the answer is cached a few seconds
per database so a vote does not count users every time.
"""

from __future__ import annotations

import threading
import time

from sqlalchemy.orm import Session

from papersift.settings import Settings
from papersift.store import users as user_store
from papersift.store.db import Database

CACHE_SECONDS = 5.0
_lock = threading.Lock()
_has_users: dict[str, tuple[float, bool]] = {}


class SignupRefused(Exception):
    """This address may not create an account (the message says why, for the CLI)."""


def signup_refusal(session: Session, settings: Settings, email: str) -> str | None:
    """Why ``email`` (normalized) may not create an account by signing in, or None."""
    policy = settings.signup_policy
    if policy == "open":
        return None
    if policy == "domains":
        domain = email.rsplit("@", 1)[-1]
        if domain in settings.signup_domain_list:
            return None
        return "sign-up is limited to addresses at " + ", ".join(settings.signup_domain_list)
    if policy == "invite":
        if user_store.invite_for(session, email) is not None:
            return None
        return "sign-up is by invitation only"
    return "sign-up is closed: an operator adds accounts (papersift users add)"


def has_users(db: Database) -> bool:
    now = time.monotonic()
    with _lock:
        hit = _has_users.get(db.url)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
    with db.session() as session:
        found = user_store.user_count(session) > 0
    with _lock:
        _has_users[db.url] = (now, found)
    return found


def forget(db: Database) -> None:
    """Drop the cached answer (after a user is added or removed here)."""
    with _lock:
        _has_users.pop(db.url, None)


def has_accounts(settings: Settings, db: Database) -> bool:
    return settings.signup_policy != "closed" or has_users(db)


def anonymous_votes(settings: Settings, db: Database) -> bool:
    """Whether a visitor without an account may vote here."""
    if settings.anonymous_votes is not None:
        return settings.anonymous_votes
    return not has_accounts(settings, db)
