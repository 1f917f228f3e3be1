"""Helpers for tests that need a signed-in reader: real rows, real sessions, real tokens
(made through the same services the web app uses; no mail)."""

from __future__ import annotations

from typing import Any

from papersift.accounts import Account
from papersift.accounts import sessions as account_sessions
from papersift.store import users as user_store
from papersift.store.db import Database


def make_account(db: Database, email: str, *, admin: bool = False, name: str = "") -> Account:
    """A new account row (no sign-in mail)."""
    with db.session() as session:
        return user_store.account_of(
            user_store.create_user(session, email, name=name, is_admin=admin)
        )


def sign_in(client: Any, db: Database, account: Account, *, days: int = 30) -> str:
    """Make a real server-side session for ``account`` and set its cookie on ``client``
    (a ``fastapi.testclient.TestClient`` or an ``httpx.Client``); returns the secret."""
    secret = account_sessions.start_session(db, account.id, days=days, agent="tests")
    client.cookies.set(account_sessions.SESSION_COOKIE, secret)
    return secret


def api_token(db: Database, account: Account, name: str = "test") -> str:
    """A real personal API token for ``account`` (send as ``Authorization: Bearer``)."""
    return account_sessions.new_token(db, account.id, name)
