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
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    with db.session() as s:
        user_store.add_invite(s, "tok@example.org")
        credentials.add_signin_link(s, "t", "tok@example.org", "n", "/", now, now + timedelta(1))
    with db.session() as s:
        assert user_store.delete_user(s, acct.id)
        assert user_store.invite_for(s, "tok@example.org") is None
        assert credentials.live_link(s, "t", now) is None
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


def test_a_link_works_once_even_when_clicks_race(db: Database, tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from papersift.accounts import signin

    settings = load_settings(tmp_path / "home", db.url).replace(signup_policy="open")
    asked = signin.request_link(db, settings, "race@example.org", "/x")
    assert asked.mail_id is not None
    with db.session() as s:
        from papersift.store import outbox as outbox_store

        [row] = [r for r in outbox_store.listing(s, limit=10) if r.recipient == "race@example.org"]
        assert row.kind == signin.SIGNIN_KIND and row.link
        token = row.link.split("token=", 1)[1]
    assert signin.bound_to(db, token, asked.nonce)
    assert not signin.bound_to(db, token, "another-browser")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: signin.complete(db, settings, token), range(8)))
    done = [r for r in results if r is not None]
    assert len(done) == 1 and done[0].created and done[0].next_path == "/x"
    assert done[0].account.is_admin  # the first account
    assert signin.complete(db, settings, token) is None


def test_votes_move_from_a_visitor_to_an_account(db: Database) -> None:
    from datetime import UTC, datetime

    from papersift.accounts import voter_key
    from papersift.model import normalize_title
    from papersift.store import votes as vote_store
    from papersift.store.schema import PaperRow

    now = datetime.now(UTC)
    with db.session() as s:
        for pid in ("p1", "p2", "p3"):
            s.add(
                PaperRow(
                    id=pid,
                    title=pid,
                    title_key=normalize_title(pid),
                    first_seen=now,
                    modified_at=now,
                    content_hash="0" * 40,
                )
            )
    acct = make_account(db, "mover@example.org")
    key = voter_key(acct.id)
    with db.session() as s:
        for pid in ("p1", "p2"):
            vote_store.add_vote(s, pid, "visitor-a", now)
        vote_store.add_vote(s, "p2", key, now)  # voted on p2 both ways: one vote stays
        vote_store.add_vote(s, "p3", key, now)
    with db.session() as s:
        assert vote_store.move_votes(s, "visitor-a", key) == 1
    with db.session() as s:
        assert sorted(p for p, _ in vote_store.votes_of(s, key)) == ["p1", "p2", "p3"]
        assert vote_store.votes_of(s, "visitor-a") == []
        assert vote_store.vote_counts(s, ["p1", "p2", "p3"]) == {"p1": 1, "p2": 1, "p3": 1}
    with db.session() as s:
        assert user_store.delete_user(s, acct.id)
    with db.session() as s:
        assert vote_store.vote_counts(s, ["p1", "p2", "p3"]) == {"p1": 0, "p2": 0, "p3": 0}
