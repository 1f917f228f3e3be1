"""The accounts core others build on: rows, sessions, tokens, the web dependencies and the
export registry, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from papersift.accounts import sessions as account_sessions
from papersift.accounts.export import export_account
from papersift.settings import load_settings
from papersift.store import credentials
from papersift.store import users as user_store
from papersift.store.db import Database
from papersift.web.app import create_app

from .accounts_support import api_token, make_account, sign_in


def test_users_rows_normalize_and_refuse_duplicates(db: Database) -> None:
    acct = make_account(db, "  Ada@Example.ORG ", admin=True, name="Ada")
    assert acct.email == "ada@example.org" and acct.is_admin
    with db.session() as s, pytest.raises(user_store.UserExists):
        user_store.create_user(s, "ada@example.org")
    with db.session() as s:
        row = user_store.user_by_email(s, "ADA@example.org")
        assert row is not None and user_store.account_of(row) == acct
        assert user_store.user_count(s) == 1


def test_sessions_resolve_expire_and_revoke(db: Database) -> None:
    acct = make_account(db, "grace@example.org")
    one = account_sessions.start_session(db, acct.id, days=1)
    two = account_sessions.start_session(db, acct.id, days=1)
    assert account_sessions.session_account(db, one) == acct
    assert account_sessions.session_account(db, "nope") is None
    assert account_sessions.session_account(db, "x" * 5000) is None
    account_sessions.end_session(db, one)
    assert account_sessions.session_account(db, one) is None
    assert account_sessions.session_account(db, two) == acct
    assert account_sessions.end_all_sessions(db, acct.id) == 1
    assert account_sessions.session_account(db, two) is None
    # the store keeps only hashes
    three = account_sessions.start_session(db, acct.id, days=1)
    with db.session() as s:
        hashes = [r.token_hash for r in credentials.sessions_of(s, acct.id)]
    assert three not in hashes and credentials.secret_hash(three) in hashes


def test_tokens_and_export_and_delete(db: Database) -> None:
    acct = make_account(db, "tok@example.org")
    token = api_token(db, acct, "script")
    assert account_sessions.token_account(db, token) == acct
    assert account_sessions.token_account(db, token + "x") is None
    out = export_account(db, acct.id)
    assert out["account"]["email"] == "tok@example.org"
    assert [t["name"] for t in out["account"]["api_tokens"]] == ["script"]
    assert token not in repr(out)
    with db.session() as s:
        assert user_store.delete_user(s, acct.id)
    assert account_sessions.token_account(db, token) is None
    assert export_account(db, acct.id)["account"] == {}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[TestClient, Database]]:
    home = tmp_path / "home"
    settings = load_settings(home, f"sqlite:///{home / 'papersift.db'}")
    db = Database(settings.db_url)
    with TestClient(create_app(settings, db=db, warm_search=False)) as c:
        yield c, db
    db.dispose()


def test_pages_show_the_account_and_the_api_takes_bearer_tokens(
    client: tuple[TestClient, Database],
) -> None:
    c, db = client
    assert 'href="/signin"' in c.get("/trending").text
    acct = make_account(db, "reader@example.org")
    sign_in(c, db, acct)
    page = c.get("/trending").text
    assert 'href="/account"' in page and "reader@example.org" in page
    assert 'href="/signin"' not in page
    c.cookies.clear()
    bad = c.get("/api/v1/account", headers={"Authorization": "Bearer pst_forged"})
    assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
    good = c.get("/api/v1/account", headers={"Authorization": f"Bearer {api_token(db, acct)}"})
    assert good.status_code == 200 and good.json()["email"] == "reader@example.org"
    assert c.get("/api/v1/account").status_code == 401
