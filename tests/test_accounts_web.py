"""Accounts over real HTTP (uvicorn on 127.0.0.1) with a real SMTP server (aiosmtpd):
sign-in by mailed link (once, 15 minutes, bound to the browser or confirmed by a button),
sign-up policies, mail throttles, sessions and sign-out everywhere, API tokens, export and
deletion, and votes that belong to accounts."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select, update

from papersift.accounts import policy, voter_key
from papersift.digest import subscriptions as subs
from papersift.digest.validation import Preferences
from papersift.settings import load_settings
from papersift.store import users as user_store
from papersift.store.db import Database
from papersift.store.schema import SubscriberRow, VoteRow
from papersift.store.schema_accounts import SigninLinkRow, UserSessionRow
from papersift.web.app import create_app

from .accounts_support import AccountsServer, accounts_server, make_account, sign_in
from .digest_support import copy_home, links_in

PAPER = "hep-th/9901001"


Live = AccountsServer


@pytest.fixture(scope="module")
def live(web_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    home = copy_home(web_home, tmp_path_factory.mktemp("accounts-web") / "home")
    with accounts_server(home, forwarded_allow_ips="127.0.0.1") as server:
        yield server


@pytest.fixture(autouse=True)
def _policy(live: Live) -> Iterator[None]:
    live.settings.signup_policy = "open"
    live.settings.anonymous_votes = None
    yield
    live.settings.signup_policy = "open"
    live.settings.anonymous_votes = None
    policy.forget(live.db)


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


_addresses = iter(range(1, 60000))


def browser(live: Live) -> httpx.Client:
    """A browser on an address of its own (through the trusted proxy header): the per-IP
    limits of one test do not spill into the next."""
    n = next(_addresses)
    ip = f"10.9.{n // 250}.{n % 250 + 1}"
    return httpx.Client(base_url=live.url, timeout=10, headers={"X-Forwarded-For": ip})


def ask_link(live: Live, client: httpx.Client, email: str, next_path: str = "/") -> httpx.Response:
    page = client.get("/signin", params={"next": next_path})
    assert page.status_code == 200
    return client.post(
        "/signin", data={"csrf_token": csrf_from(page.text), "email": email, "next": next_path}
    )


def wait_mail(live: Live, email: str, count: int = 1, timeout: float = 10) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = live.smtp.to(email)
        if len(got) >= count:
            return got
        time.sleep(0.02)
    raise AssertionError(f"{email}: expected {count} messages, got {len(live.smtp.to(email))}")


def link_of(captured) -> str:
    [link] = [u for u in links_in(captured.message) if "/signin/link?token=" in u]
    return link


def signed_in_as(client: httpx.Client) -> str | None:
    page = client.get("/api/v1/account")
    return page.json()["email"] if page.status_code == 200 else None


def sign_in_by_mail(live: Live, client: httpx.Client, email: str) -> None:
    before = len(live.smtp.to(email))
    assert ask_link(live, client, email).status_code == 200
    link = link_of(wait_mail(live, email, before + 1)[-1])
    assert client.get(link).status_code == 303
    assert signed_in_as(client) == email


def test_link_signs_in_the_browser_that_asked_once(live: Live) -> None:
    email = "first@example.org"
    client = browser(live)
    answer = ask_link(live, client, "First@Example.org", "/trending?window=week")
    assert answer.status_code == 200 and 'id="signin-sent"' in answer.text
    nonce = answer.headers["set-cookie"]
    assert "ps_signin=" in nonce and "HttpOnly" in nonce and "SameSite=lax" in nonce
    captured = wait_mail(live, email)[0]
    assert "sign-in link" in captured.message["Subject"]
    link = link_of(captured)
    assert link.startswith(live.url)
    landed = client.get(link)
    assert landed.status_code == 303 and landed.headers["location"] == "/trending?window=week"
    cookie = [v for k, v in landed.headers.multi_items() if k == "set-cookie"]
    session = next(c for c in cookie if c.startswith("ps_session="))
    assert "HttpOnly" in session and "SameSite=lax" in session and "Secure" not in session
    assert signed_in_as(client) == email
    with live.db.session() as s:
        row = user_store.user_by_email(s, email)
        assert row is not None and row.is_admin  # the deployment's first account
    page = client.get("/account")
    assert page.status_code == 200 and email in page.text
    # once only, in any browser
    assert client.get(link).status_code == 400
    assert browser(live).get(link).status_code == 400


def test_another_browser_or_a_scanner_gets_only_a_button(live: Live) -> None:
    email = "elsewhere@example.org"
    ask_link(live, browser(live), email)
    link = link_of(wait_mail(live, email)[0])
    scanner = browser(live)
    for _ in range(3):
        page = scanner.get(link)
        assert page.status_code == 200 and 'id="signin-confirm"' in page.text
        assert "ps_session" not in page.headers.get("set-cookie", "")
    assert signed_in_as(scanner) is None
    with live.db.session() as s:
        assert user_store.user_by_email(s, email) is None  # nothing happened yet
    phone = browser(live)
    page = phone.get(link)
    token = re.search(r'name="token" value="([^"]+)"', page.text).group(1)
    # without this page's CSRF token (a cross-site form) the button does nothing
    assert phone.post("/signin/link", data={"token": token}).status_code == 403
    done = phone.post("/signin/link", data={"token": token, "csrf_token": csrf_from(page.text)})
    assert done.status_code == 303 and signed_in_as(phone) == email
    with live.db.session() as s:
        row = user_store.user_by_email(s, email)
        assert row is not None and not row.is_admin


def test_expired_link_and_unknown_token(live: Live) -> None:
    email = "late@example.org"
    client = browser(live)
    ask_link(live, client, email)
    link = link_of(wait_mail(live, email)[0])
    with live.db.session() as s:
        s.execute(
            update(SigninLinkRow)
            .where(SigninLinkRow.email == email)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert client.get(link).status_code == 400
    assert client.get("/signin/link?token=forged").status_code == 400
    assert client.get("/signin/link?token=" + "x" * 5000).status_code == 400
    assert signed_in_as(client) is None


def outbox_count(live: Live, email: str) -> int:
    from papersift.store.schema_jobs import OutboxRow

    with live.db.session() as s:
        return s.scalar(
            select(func.count()).select_from(OutboxRow).where(OutboxRow.recipient == email)
        )


def test_signup_policies(live: Live) -> None:
    live.settings.signup_policy = "closed"
    answer = ask_link(live, browser(live), "nobody@example.org")
    assert answer.status_code == 200 and 'id="signin-sent"' in answer.text  # same answer
    live.settings.signup_policy = "domains"
    live.settings.signup_domains = "lab.example.org"
    ask_link(live, browser(live), "outsider@example.org")
    client = browser(live)
    sign_in_by_mail(live, client, "member@lab.example.org")
    live.settings.signup_policy = "invite"
    ask_link(live, browser(live), "uninvited@example.org")
    with live.db.session() as s:
        user_store.add_invite(s, "guest@example.org")
    sign_in_by_mail(live, browser(live), "guest@example.org")
    with live.db.session() as s:
        invite = user_store.invite_for(s, "guest@example.org")
        assert invite is not None and invite.used_at is not None
    # an existing account signs in whatever the policy
    live.settings.signup_policy = "closed"
    sign_in_by_mail(live, browser(live), "member@lab.example.org")
    for refused in ("nobody@example.org", "outsider@example.org", "uninvited@example.org"):
        assert outbox_count(live, refused) == 0
    with live.db.session() as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(SigninLinkRow)
                .where(SigninLinkRow.email.in_(["nobody@example.org", "outsider@example.org"]))
            )
            == 0
        )


def test_signin_mails_are_throttled_per_inbox(live: Live) -> None:
    for i in range(5):
        answer = ask_link(live, browser(live), f"flood+{i}@example.org")
        assert answer.status_code == 200  # the same answer, mailed or not
    total = sum(outbox_count(live, f"flood+{i}@example.org") for i in range(5))
    assert total == 3  # the inbox's burst; then one per 5 minutes


def test_bad_input_is_refused_cleanly(live: Live) -> None:
    client = browser(live)
    page = client.get("/signin")
    csrf = csrf_from(page.text)
    for bad in ("not-an-address", "a@localhost", "x@example.org\r\nBcc: y@example.org", ""):
        answer = client.post("/signin", data={"csrf_token": csrf, "email": bad})
        assert answer.status_code == 400
    assert client.post("/signin", data={"email": "ok@example.org"}).status_code == 403
    evil = ask_link(live, client, "next@example.org", "//evil.example/x")
    assert evil.status_code == 200
    link = link_of(wait_mail(live, "next@example.org")[0])
    assert client.get(link).headers["location"] == "/"


def test_sign_out_and_sign_out_everywhere(live: Live) -> None:
    email = "twice@example.org"
    laptop, phone = browser(live), browser(live)
    sign_in_by_mail(live, laptop, email)
    sign_in_by_mail(live, phone, email)
    page = laptop.get("/account")
    assert "2 browsers signed in" in page.text
    out = laptop.post("/signout", data={"csrf_token": csrf_from(page.text)})
    assert out.status_code == 303 and signed_in_as(laptop) is None
    assert signed_in_as(phone) == email
    sign_in_by_mail(live, laptop, email)
    page = phone.get("/account")
    done = phone.post("/account/signout-everywhere", data={"csrf_token": csrf_from(page.text)})
    assert done.status_code == 303
    assert signed_in_as(phone) is None and signed_in_as(laptop) is None
    with live.db.session() as s:
        uid = user_store.user_by_email(s, email).id
        assert s.scalar(select(func.count()).where(UserSessionRow.user_id == uid)) == 0
    # a signed-out page asks to sign in
    assert laptop.get("/account").headers["location"] == "/signin?next=%2Faccount"


def test_api_tokens_create_use_revoke(live: Live) -> None:
    client = browser(live)
    sign_in_by_mail(live, client, "script@example.org")
    page = client.get("/account")
    made = client.post("/account/tokens", data={"csrf_token": csrf_from(page.text), "name": "cron"})
    token = re.search(r'<code id="new-token">([^<]+)</code>', made.text).group(1)
    assert "cron" in made.text
    assert token not in client.get("/account").text  # shown once
    api = httpx.Client(base_url=live.url, timeout=10, headers={"Authorization": f"Bearer {token}"})
    assert api.get("/api/v1/account").json()["email"] == "script@example.org"
    voted = api.post(f"/api/v1/papers/{PAPER}/upvote")
    assert voted.status_code == 200 and voted.json()["voted"]
    token_id = re.search(r"/account/tokens/(\d+)/revoke", made.text).group(1)
    page = client.get("/account")
    client.post(f"/account/tokens/{token_id}/revoke", data={"csrf_token": csrf_from(page.text)})
    assert api.get("/api/v1/account").status_code == 401
    with live.db.session() as s:
        uid = user_store.user_by_email(s, "script@example.org").id
        assert s.get(VoteRow, (PAPER, voter_key(uid))) is not None


def votes_on(live: Live, paper: str = PAPER) -> int:
    with live.db.session() as s:
        return s.scalar(select(func.count()).where(VoteRow.paper_id == paper))


def vote(client: httpx.Client, paper: str = PAPER, undo: bool = False) -> httpx.Response:
    page = client.get(f"/papers/{paper}")
    data = {"csrf_token": csrf_from(page.text)}
    if undo:
        data["undo"] = "1"
    return client.post(f"/papers/{paper}/upvote", data=data, headers={"accept": "application/json"})


def test_votes_are_accounts_and_anonymous_ones_move_at_sign_in(live: Live) -> None:
    before = votes_on(live)
    anonymous = browser(live)
    assert vote(anonymous).status_code == 401  # sign-up is open: votes are accounts'
    assert votes_on(live) == before
    live.settings.anonymous_votes = True
    # allowed again, anonymous votes keep the hardening rules: no cookie, no vote
    cookieless = httpx.post(f"{live.url}/api/v1/papers/{PAPER}/upvote", timeout=10)
    assert cookieless.status_code == 403
    assert vote(anonymous).json()["voted"]
    assert votes_on(live) == before + 1
    live.settings.anonymous_votes = None
    sign_in_by_mail(live, anonymous, "voter@example.org")
    assert votes_on(live) == before + 1  # the same vote, now the account's
    with live.db.session() as s:
        uid = user_store.user_by_email(s, "voter@example.org").id
        assert s.get(VoteRow, (PAPER, voter_key(uid))) is not None
    page = anonymous.get(f"/papers/{PAPER}")
    assert 'aria-pressed="true"' in page.text or "voted" in page.text
    assert vote(anonymous).json()["voted"]  # again: still one vote
    other = browser(live)
    sign_in_by_mail(live, other, "voter@example.org")
    assert vote(other).json()["voted"] and votes_on(live) == before + 1
    assert not vote(other, undo=True).json()["voted"]
    assert votes_on(live) == before


def test_export_and_delete_everything(live: Live) -> None:
    email = "leaving@example.org"
    client = browser(live)
    sign_in_by_mail(live, client, email)
    subs.subscribe(live.db, email, Preferences(topics=["quantization"]))
    vote(client)
    page = client.get("/account")
    assert 'id="account-subscription"' in page.text and "quantization" in page.text
    exported = client.get("/account/export")
    assert exported.headers["content-type"].startswith("application/json")
    assert "attachment" in exported.headers["content-disposition"]
    data = exported.json()["account"]
    uid = data["id"]
    assert data["email"] == email and data["subscription"]["topics"] == ["quantization"]
    assert [v["paper_id"] for v in data["votes"]] == [PAPER]
    assert client.get("/api/v1/account/export").json()["account"]["email"] == email
    form = client.get("/account/delete")
    wrong = client.post(
        "/account/delete", data={"csrf_token": csrf_from(form.text), "email": "x@y.org"}
    )
    assert wrong.status_code == 400
    gone = client.post("/account/delete", data={"csrf_token": csrf_from(form.text), "email": email})
    assert gone.status_code == 303 and signed_in_as(client) is None
    with live.db.session() as s:
        assert user_store.user_by_email(s, email) is None
        assert s.scalar(select(func.count()).where(SubscriberRow.email == email)) == 0
        assert s.scalar(select(func.count()).where(VoteRow.visitor_id == voter_key(uid))) == 0
        assert s.scalar(select(func.count()).where(UserSessionRow.user_id == uid)) == 0


def test_secure_cookie_on_https(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    home = tmp_path / "home"
    settings = load_settings(home, f"sqlite:///{home / 'papersift.db'}").replace(
        base_url="https://papers.example.org"
    )
    db = Database(settings.db_url)
    acct = make_account(db, "s@example.org")
    with TestClient(
        create_app(settings, db=db, warm_search=False), base_url="https://testserver"
    ) as c:
        sign_in(c, db, acct)
        page = c.get("/account")
        out = c.post("/signout", data={"csrf_token": csrf_from(page.text)}, follow_redirects=False)
        assert "Secure" in out.headers["set-cookie"]
        c.cookies.clear()
        asked = c.get("/signin")
        posted = c.post(
            "/signin", data={"csrf_token": csrf_from(asked.text), "email": "n@example.org"}
        )
        assert (
            "Secure" in posted.headers["set-cookie"] and "HttpOnly" in posted.headers["set-cookie"]
        )
    db.dispose()
