"""Subscriptions over real HTTP (uvicorn on 127.0.0.1) with a real SMTP server capturing mail.

End to end: the form -> confirmation mail -> the link in it -> a digest -> the RFC 8058
one-click POST to its List-Unsubscribe URL -> nothing more. Plus the JSON API, bad input
(CR/LF header injection), forged and expired links, the manage page.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from papersift.digest import subscriptions as subs
from papersift.digest import tokens
from papersift.digest.run import run_digests
from papersift.store.schema import SubscriberRow

from .accounts_support import AccountsServer, app_in_thread
from .digest_support import copy_home, links_in

Live = AccountsServer  # where the app runs: url, settings, db, smtp


@pytest.fixture(scope="module")
def live(web_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """The real app on a copy of the web test home (seeds, embeddings and search index)."""
    home = copy_home(web_home, tmp_path_factory.mktemp("subs-web") / "home")
    with app_in_thread(home) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_throttle() -> None:
    subs._recent.clear()


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def form_client(live: Live) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=live.url, timeout=10)
    page = client.get("/subscribe")
    assert page.status_code == 200
    return client, csrf_from(page.text)


def wait_mail(live: Live, email: str, count: int = 1, timeout: float = 10) -> list:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = live.smtp.to(email)
        if len(got) >= count:
            return got
        time.sleep(0.02)
    raise AssertionError(f"{email}: expected {count} messages, got {len(live.smtp.to(email))}")


def status_of(live: Live, email: str) -> str | None:
    with live.db.session() as s:
        return s.scalar(select(SubscriberRow.status).where(SubscriberRow.email == email))


def count_subscribers(live: Live) -> int:
    with live.db.session() as s:
        return s.scalar(select(func.count()).select_from(SubscriberRow))


def test_subscribe_confirm_digest_one_click_unsubscribe(live: Live) -> None:
    email = "e2e@example.org"
    client, csrf = form_client(live)
    page = client.post(
        "/subscribe",
        data={
            "csrf_token": csrf,
            "email": "E2E@Example.org",
            "topics": "transformers\r\nquantization",
            "max_papers": "4",
            "frequency": "daily",
        },
    )
    assert page.status_code == 200 and "Check your inbox" in page.text
    assert status_of(live, email) == "pending"

    confirm_mail = wait_mail(live, email)[0].message
    assert "Confirm" in confirm_mail["Subject"]
    [link] = [u for u in links_in(confirm_mail) if "/subscriptions/confirm?token=" in u]
    assert link.startswith(live.url)
    # an unconfirmed address gets nothing
    assert run_digests(live.settings, live.db, emails=[email]).outcomes == []
    # Following the link (as mail scanners do) only shows a button: still pending.
    for _ in range(2):
        asked = httpx.get(link, timeout=10)
        assert asked.status_code == 200 and "Yes, subscribe me" in asked.text
        assert status_of(live, email) == "pending"
    button = re.search(r'<form action="([^"]+)" method="post"', asked.text)
    assert button is not None and button.group(1).startswith("/subscriptions/confirm?token=")
    confirmed = httpx.post(live.url + html.unescape(button.group(1)), timeout=10)
    assert confirmed.status_code == 200 and "You are subscribed" in confirmed.text
    assert status_of(live, email) == "confirmed"
    assert "Already confirmed" in httpx.post(link, timeout=10).text  # idempotent
    assert "Already confirmed" in httpx.get(link, timeout=10).text

    report = run_digests(live.settings, live.db, emails=[email], backoff=0.01)
    assert report.counts() == {"sent": 1}
    digest = wait_mail(live, email, 2)[1].message
    assert digest["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    https_link = str(digest["List-Unsubscribe"]).split(",")[0].strip().strip("<>")
    assert https_link.startswith(f"{live.url}/unsubscribe?token=")
    paper_links = [u for u in links_in(digest) if "/papers/" in u]
    assert len(paper_links) == 4
    assert httpx.get(paper_links[0], timeout=10).status_code == 200  # links work

    # RFC 8058: a mail client POSTs the body below, no cookies, no page, no CSRF token
    one_click = httpx.post(
        https_link,
        content=b"List-Unsubscribe=One-Click",
        timeout=10,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200 and "unsubscribed" in one_click.text
    assert status_of(live, email) == "unsubscribed"
    again = httpx.post(
        https_link,
        content=b"List-Unsubscribe=One-Click",
        timeout=10,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert again.status_code == 200 and "already unsubscribed" in again.text

    tomorrow = date.today() + timedelta(days=1)
    assert run_digests(live.settings, live.db, day=tomorrow, emails=[email]).outcomes == []
    assert len(live.smtp.to(email)) == 2


def test_unsubscribe_get_shows_a_button_and_changes_nothing(live: Live) -> None:
    email = "button@example.org"
    sub = subs.subscribe(live.db, email, subs.clean_preferences()).subscriber
    subs.confirm(
        live.db, live.settings, tokens.make_token(live.settings, tokens.CONFIRM, sub.id, email)
    )
    url = tokens.unsubscribe_url(live.settings, sub.id, email)
    page = httpx.get(url, timeout=10)
    assert page.status_code == 200
    assert 'method="post"' in page.text and "Unsubscribe</button>" in page.text
    assert status_of(live, email) == "confirmed"
    token = url.split("token=")[1]
    done = httpx.post(f"{live.url}/unsubscribe", data={"token": token}, timeout=10)
    assert done.status_code == 200 and status_of(live, email) == "unsubscribed"
    # the manage link cannot bring it back: that takes a new sign-up and confirmation
    manage = tokens.manage_url(live.settings, sub.id, email)
    client = httpx.Client(timeout=10)
    page = client.get(manage)
    assert "Resubscribe" in page.text
    back = client.post(
        manage,
        data={
            "csrf_token": csrf_from(page.text),
            "action": "resume",
            "frequency": "daily",
            "max_papers": "20",
        },
    )
    assert back.status_code == 400 and status_of(live, email) == "unsubscribed"
    assert "subscribe again" in back.text or "subscribe on the" in back.text


def test_api_subscription_is_accepted_and_mailed(live: Live) -> None:
    email = "api@example.org"
    resp = httpx.post(
        f"{live.url}/api/v1/subscriptions",
        timeout=10,
        json={"email": email, "topics": ["sparse attention"], "max_papers": 5},
    )
    assert resp.status_code == 202, resp.text
    assert resp.json()["status"] == "pending"
    mail = wait_mail(live, email)[0].message
    assert any("/subscriptions/confirm?token=" in u for u in links_in(mail))
    with live.db.session() as s:
        row = s.scalar(select(SubscriberRow).where(SubscriberRow.email == email))
        assert (row.topics, row.max_papers, row.status) == (["sparse attention"], 5, "pending")


def test_subscribing_a_confirmed_address_changes_nothing_and_tells_its_owner(live: Live) -> None:
    email = "owner@example.org"
    sub = subs.subscribe(live.db, email, subs.clean_preferences(topics=["mine"])).subscriber
    subs.confirm(
        live.db, live.settings, tokens.make_token(live.settings, tokens.CONFIRM, sub.id, email)
    )
    resp = httpx.post(
        f"{live.url}/api/v1/subscriptions",
        timeout=10,
        json={"email": email, "topics": ["attacker's choice"]},
    )
    assert resp.status_code == 202  # same answer as for a new address
    note = wait_mail(live, email)[0].message
    assert "already subscribed" in note["Subject"]
    assert any("/subscriptions/manage?token=" in u for u in links_in(note))
    assert subs.get_by_email(live.db, email).topics == ["mine"]


@pytest.mark.parametrize(
    "payload, fragment",
    [
        ({"email": "evil@example.org\r\nBcc: victim@example.org"}, "control characters"),
        ({"email": "evil@example.org\n"}, "control characters"),
        (
            {"email": "evil@example.org", "topics": ["ok", "x\r\nBcc: victim@example.org"]},
            "control characters",
        ),
        ({"email": "not-an-address"}, "exactly one @"),
        ({"email": "a@example.org", "frequency": "hourly"}, "frequency"),
        ({"email": "a@example.org", "collections": ["no-such-collection"]}, "unknown collection"),
    ],
)
def test_api_rejects_bad_input_with_a_problem(live: Live, payload: dict, fragment: str) -> None:
    before = count_subscribers(live)
    sent = len(live.smtp.messages)
    resp = httpx.post(f"{live.url}/api/v1/subscriptions", json=payload, timeout=10)
    assert resp.status_code == 422
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert fragment in " ".join(resp.json()["errors"])
    assert count_subscribers(live) == before
    time.sleep(0.1)
    assert len(live.smtp.messages) == sent


@pytest.mark.parametrize(
    "fields, fragment",
    [
        ({"email": "evil@example.org\r\nBcc: victim@example.org"}, "control characters"),
        (
            {"email": "evil2@example.org", "topic": "x\r\nBcc: victim@example.org"},
            "control characters",
        ),
        ({"email": "evil3@example.org", "topics": "fine\nbad\rline"}, "control characters"),
        ({"email": "nobody"}, "exactly one @"),
        ({"email": "evil4@example.org", "max_papers": "1000"}, "max papers"),
    ],
)
def test_form_rejects_bad_input_and_keeps_nothing(live: Live, fields: dict, fragment: str) -> None:
    before = count_subscribers(live)
    client, csrf = form_client(live)
    resp = client.post("/subscribe", data={"csrf_token": csrf, **fields})
    assert resp.status_code == 400
    assert fragment in resp.text
    assert count_subscribers(live) == before


def test_form_without_valid_csrf_is_refused(live: Live) -> None:
    resp = httpx.post(
        f"{live.url}/subscribe",
        data={"email": "csrf@example.org", "csrf_token": "forged"},
        timeout=10,
    )
    assert resp.status_code == 403
    assert status_of(live, "csrf@example.org") is None


def test_home_page_form_subscribes(live: Live) -> None:
    client = httpx.Client(base_url=live.url, timeout=10)
    home = client.get("/")
    resp = client.post(
        "/subscribe",
        data={"csrf_token": csrf_from(home.text), "email": "home@example.org", "topic": "LoRA"},
    )
    assert resp.status_code == 200
    assert subs.get_by_email(live.db, "home@example.org").topics == ["LoRA"]


def test_a_confirmation_link_of_a_cancelled_subscription_confirms_nothing(live: Live) -> None:
    email = "cancelled@example.org"
    sub = subs.subscribe(live.db, email, subs.clean_preferences()).subscriber
    link = tokens.confirm_url(live.settings, sub.id, email)
    subs.unsubscribe(
        live.db, live.settings, tokens.make_token(live.settings, tokens.UNSUBSCRIBE, sub.id, email)
    )
    for method in ("GET", "POST"):
        resp = httpx.request(method, link, timeout=10)
        assert resp.status_code == 400 and "no longer valid" in resp.text
        assert status_of(live, email) == "unsubscribed"


def test_forged_and_expired_links_are_rejected(live: Live) -> None:
    email = "links@example.org"
    sub = subs.subscribe(live.db, email, subs.clean_preferences()).subscriber
    expired = tokens.make_token(
        live.settings, tokens.CONFIRM, sub.id, email, now=datetime.now(UTC) - timedelta(days=8)
    )
    for method in ("GET", "POST"):
        resp = httpx.request(
            method, f"{live.url}/subscriptions/confirm", params={"token": expired}, timeout=10
        )
        assert resp.status_code == 400 and "expired" in resp.text
    assert status_of(live, email) == "pending"
    good = tokens.make_token(live.settings, tokens.UNSUBSCRIBE, sub.id, email)
    forged = [
        good[:-3] + ("xyz" if not good.endswith("xyz") else "abc"),
        tokens.make_token(live.settings, tokens.UNSUBSCRIBE, sub.id, "other@example.org"),
        tokens.make_token(live.settings, tokens.MANAGE, sub.id, email),  # wrong purpose
        "",
        "nonsense",
    ]
    for token in forged:
        for method, path in (
            ("GET", "/unsubscribe"),
            ("POST", "/unsubscribe"),
            ("GET", "/subscriptions/confirm"),
            ("POST", "/subscriptions/confirm"),
        ):
            resp = httpx.request(method, f"{live.url}{path}", params={"token": token}, timeout=10)
            assert resp.status_code == 400, (method, path, token)
            assert resp.headers["cache-control"] == "private, no-store"  # a page about a link
    resp = httpx.get(f"{live.url}/subscriptions/manage", params={"token": good}, timeout=10)
    assert resp.status_code == 400
    assert status_of(live, email) == "pending"


def test_manage_page_updates_preferences(live: Live) -> None:
    email = "prefs@example.org"
    sub = subs.subscribe(live.db, email, subs.clean_preferences(topics=["old"])).subscriber
    subs.confirm(
        live.db, live.settings, tokens.make_token(live.settings, tokens.CONFIRM, sub.id, email)
    )
    manage = tokens.manage_url(live.settings, sub.id, email)
    client = httpx.Client(timeout=10)
    page = client.get(manage)
    assert page.status_code == 200 and "old" in page.text
    assert page.headers["cache-control"] == "private, no-store"
    saved = client.post(
        manage,
        data={
            "csrf_token": csrf_from(page.text),
            "topics": "diffusion\nLoRA",
            "frequency": "weekly",
            "max_papers": "7",
            "collection": "000_e3b0215ea9dd5350",
        },
    )
    assert saved.status_code == 200 and "Saved." in saved.text
    after = subs.get_by_email(live.db, email)
    assert (after.topics, after.frequency, after.max_papers, after.collections) == (
        ["diffusion", "LoRA"],
        "weekly",
        7,
        ["000_e3b0215ea9dd5350"],
    )
    bad = client.post(
        manage,
        data={"csrf_token": csrf_from(page.text), "topics": "x\r\ny\x00", "frequency": "daily"},
    )
    assert bad.status_code == 400 and "control characters" in bad.text
    assert subs.get_by_email(live.db, email).topics == ["diffusion", "LoRA"]
