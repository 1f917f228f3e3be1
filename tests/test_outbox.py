"""The durable mail outbox against a real SMTP server (aiosmtpd) and the real web app.

Sign-up mail is written to the outbox in the sign-up's transaction and delivered off the
request path: with SMTP down it is kept and a later ``papersift mail send`` delivers it
exactly once; a 4xx is retried, a 5xx is recorded as failed; with ``smtp_url = none`` it
stays in the outbox, where the CLI and the loopback-only admin page show its link.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from papersift.digest import outbox
from papersift.digest import subscriptions as subs
from papersift.digest.validation import clean_preferences
from papersift.settings import Settings, load_settings
from papersift.store.db import Database
from papersift.store.schema import SubscriberRow
from papersift.store.schema_jobs import OutboxRow
from papersift.web.app import create_app

from .conftest import serve_in_thread
from .digest_support import PAPERSIFT, SmtpCapture, cli_env, copy_home, free_port, links_in

pytestmark = pytest.mark.timeout(120)


def csrf_from(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, "no CSRF field on the page"
    return match.group(1)


def sign_up(url: str, **fields: str) -> httpx.Response:
    with httpx.Client(base_url=url, timeout=20) as client:
        csrf = csrf_from(client.get("/subscribe").text)
        return client.post("/subscribe", data={"csrf_token": csrf, **fields})


def rows(db: Database, to: str | None = None) -> list[OutboxRow]:
    with db.session() as s:
        query = select(OutboxRow).order_by(OutboxRow.id)
        if to is not None:
            query = query.where(OutboxRow.recipient == to)
        found = list(s.scalars(query))
        s.expunge_all()
        return found


def wait_row(db: Database, to: str, ready, timeout: float = 20.0) -> OutboxRow:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = rows(db, to)
        if found and ready(found[-1]):
            return found[-1]
        time.sleep(0.05)
    raise AssertionError(f"outbox row for {to}: {[(r.status, r.tries) for r in rows(db, to)]}")


def cli(home: Path, smtp_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PAPERSIFT, *args],
        env=cli_env(home, smtp_url),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def site(web_home: Path, tmp_path: Path) -> Iterator[tuple[Path, Settings, Database]]:
    """A private copy of the web test home whose SMTP port has no server behind it yet."""
    home = copy_home(web_home, tmp_path / "home")
    settings = load_settings(home, f"sqlite:///{home / 'papersift.db'}").replace(
        smtp_url=f"smtp://127.0.0.1:{free_port()}?timeout=5"
    )
    db = Database(settings.db_url)
    try:
        yield home, settings, db
    finally:
        db.dispose()


def test_smtp_down_at_signup_kept_then_sent_once_by_mail_send(site) -> None:
    home, settings, db = site
    email = "down@example.org"
    with serve_in_thread(create_app(settings, db=db, warm_search=False)) as url:
        page = sign_up(url, email=email, topics="sparse attention")
        assert page.status_code == 200 and "Check your inbox" in page.text
        # the immediate attempt, off the request path, found no server: kept, not lost
        row = wait_row(db, email, lambda r: r.tries >= 1 and r.status == outbox.PENDING)
    assert row.kind == outbox.CONFIRM and row.link and "/subscriptions/confirm?token=" in row.link
    assert "cannot connect" in (row.last_error or "")

    with SmtpCapture(port=int(settings.smtp_url.split(":")[2].split("?")[0])) as smtp:
        first = cli(home, settings.smtp_url, "mail", "send")
        assert first.returncode == 0, first.stderr
        assert "sent 1" in first.stdout
        again = cli(home, settings.smtp_url, "mail", "send")
        assert again.returncode == 0 and "sent 0" in again.stdout
        got = smtp.to(email)
        assert len(got) == 1  # exactly once
        assert row.link in links_in(got[0].message)
    listed = json.loads(cli(home, settings.smtp_url, "mail", "outbox", "--json").stdout)
    mail = next(m for m in listed["mails"] if m["to"] == email)
    assert mail["status"] == "sent" and mail["tries"] >= 2 and mail["link"] == row.link


def _queue_signup(settings: Settings, db: Database, email: str) -> int:
    mail = outbox.SignupMail(settings)
    subs.subscribe(db, email, clean_preferences(topics=["graphs"]), on_signup=mail)
    assert mail.id is not None
    return mail.id


def test_temporary_refusal_is_retried_then_delivered(site) -> None:
    _home, settings, db = site
    with SmtpCapture() as smtp:
        settings = settings.replace(smtp_url=smtp.url)
        # 451 once: retried within the same delivery
        smtp.handler.rcpt_replies.extend(["451 4.3.0 try again later"])
        mail_id = _queue_signup(settings, db, "retry@example.org")
        report = outbox.deliver(settings, db, backoff=0.01)
        assert (report.sent, report.retry) == (1, 0)
        (row,) = rows(db, "retry@example.org")
        assert (row.id, row.status, row.tries) == (mail_id, outbox.SENT, 2)

        # 451 for the whole call: kept with a retry time, not tried before it, then sent
        smtp.handler.rcpt_replies.extend(["451 busy"] * 3)
        later_id = _queue_signup(settings, db, "later@example.org")
        report = outbox.deliver(settings, db, retries=2, backoff=0.01)
        assert (report.sent, report.retry, report.failed) == (0, 1, 0)
        (row,) = rows(db, "later@example.org")
        assert row.status == outbox.PENDING and row.tries == 3 and "451" in (row.last_error or "")
        assert row.next_attempt_at is not None and row.next_attempt_at > datetime.now(UTC)
        assert outbox.deliver(settings, db, backoff=0.01).sent == 0  # not due yet
        assert outbox.deliver(settings, db, due_only=False, backoff=0.01).sent == 1
        (row,) = rows(db, "later@example.org")
        assert (row.id, row.status, row.tries) == (later_id, outbox.SENT, 4)
        assert len(smtp.to("later@example.org")) == 1


def test_permanent_refusal_is_failed_and_visible(site) -> None:
    home, settings, db = site
    with SmtpCapture() as smtp:
        settings = settings.replace(smtp_url=smtp.url)
        smtp.handler.rcpt_replies.extend(["550 5.1.1 no such user"])
        _queue_signup(settings, db, "nobody@example.org")
        report = outbox.deliver(settings, db, backoff=0.01)
        assert (report.sent, report.failed) == (0, 1)
        again = cli(home, smtp.url, "mail", "send")
        assert again.returncode == 0 and "sent 0" in again.stdout  # failed is not retried
        assert smtp.to("nobody@example.org") == []
        listed = cli(home, smtp.url, "mail", "outbox", "--status", "failed", "--json")
    (mail,) = json.loads(listed.stdout)["mails"]
    assert mail["to"] == "nobody@example.org" and mail["status"] == "failed"
    assert "550" in mail["last_error"]


def test_no_smtp_keeps_mail_and_tells_the_operator(site) -> None:
    home, settings, db = site
    settings = settings.replace(smtp_url="none")
    email = "kept@example.org"
    with serve_in_thread(create_app(settings, db=db, warm_search=False)) as url:
        page = sign_up(url, email=email)
        assert page.status_code == 200 and "papersift mail outbox" in page.text
        (row,) = rows(db, email)
        assert (row.status, row.tries) == (outbox.PENDING, 0)

        admin = httpx.get(f"{url}/admin/outbox", timeout=10)
        assert admin.status_code == 200 and email in admin.text
        assert row.link and row.link.replace("&", "&amp;") in admin.text
        assert admin.headers["cache-control"] == "private, no-store"
        # through a proxy, or under another host name (DNS rebinding): refused
        proxied = httpx.get(f"{url}/admin/outbox", headers={"X-Forwarded-For": "203.0.113.9"})
        assert proxied.status_code == 403 and email not in proxied.text
        rebound = httpx.get(f"{url}/admin/outbox", headers={"Host": "evil.example"})
        assert rebound.status_code in (400, 403)  # 400: not a trusted host at all
        assert httpx.get(f"{url}/admin/outbox?status=bogus").status_code == 400
    off = settings.replace(admin_loopback=False)
    with serve_in_thread(create_app(off, db=db, warm_search=False)) as url:
        assert httpx.get(f"{url}/admin/outbox").status_code == 403

    sent = cli(home, "none", "mail", "send")
    assert sent.returncode == 0 and "kept in the outbox" in sent.stdout
    listed = cli(home, "none", "mail", "outbox")
    assert listed.returncode == 0 and "no SMTP configured" in listed.stderr
    assert email in listed.stdout
    assert rows(db, email)[0].status == outbox.PENDING


def test_resubmitting_the_form_for_a_pending_address_keeps_its_topics(site) -> None:
    _home, settings, db = site
    settings = settings.replace(smtp_url="none")
    email = "again@example.org"

    def topics() -> list[str]:
        with db.session() as s:
            return list(s.scalar(select(SubscriberRow.topics).where(SubscriberRow.email == email)))

    with serve_in_thread(create_app(settings, db=db, warm_search=False)) as url:
        assert sign_up(url, email=email, topics="graphs\nretrieval").status_code == 200
        assert topics() == ["graphs", "retrieval"]
        # the home page's form: only an address (and maybe one topic)
        assert sign_up(url, email=email).status_code == 200
        assert topics() == ["graphs", "retrieval"]
        assert sign_up(url, email=email, topic="diffusion").status_code == 200
        assert topics() == ["diffusion", "graphs", "retrieval"]
    # one confirmation mail: the repeats within the throttle window write none
    assert [r.kind for r in rows(db, email)] == [outbox.CONFIRM]


def test_bad_input_is_refused_and_changes_nothing(site) -> None:
    home, settings, db = site
    _queue_signup(settings.replace(smtp_url="none"), db, "bad@example.org")
    bad_status = cli(home, "none", "mail", "outbox", "--status", "bogus")
    assert bad_status.returncode == 2 and "status must be one of" in bad_status.stderr
    bad_url = cli(home, "http://mail.example.org", "mail", "send")
    assert bad_url.returncode == 2 and "smtp://" in bad_url.stderr
    assert "Traceback" not in bad_url.stderr
    (row,) = rows(db, "bad@example.org")
    assert (row.status, row.tries, row.claimed_by) == (outbox.PENDING, 0, None)


def test_outbox_and_daily_tables_migrate_down_and_up(tmp_path: Path) -> None:
    """0003 on an existing 0002 database: the tables appear empty, a mail written there
    survives a later upgrade, and downgrading to 0002 removes exactly these tables."""
    from sqlalchemy import create_engine, inspect, text

    from .test_migrations import _alembic

    url = f"sqlite:///{tmp_path / 'old.db'}"
    _alembic(url, "0002")
    engine = create_engine(url)
    assert not {"outbox", "daily_runs"} & set(inspect(engine).get_table_names())
    _alembic(url, "0003")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO outbox (created_at, kind, recipient, subject, message, status)"
                " VALUES (:now, 'confirm', 'a@example.org', 's', :body, 'pending')"
            ),
            {"now": datetime.now(UTC), "body": b"raw"},
        )
    _alembic(url, "head")
    with engine.begin() as conn:
        assert conn.execute(text("SELECT tries, recipient FROM outbox")).one() == (
            0,
            "a@example.org",
        )
    _alembic(url, "0002", down=True)
    assert not {"outbox", "daily_runs"} & set(inspect(engine).get_table_names())
    assert "papers" in inspect(engine).get_table_names()
    engine.dispose()


def test_two_senders_at_once_deliver_each_mail_once(db: Database, tmp_path: Path) -> None:
    """On SQLite and PostgreSQL: the claim is one conditional UPDATE, so two senders
    racing over the same waiting mails never both send one."""
    import threading

    with SmtpCapture() as smtp:
        settings = load_settings(tmp_path / "home", db.url).replace(smtp_url=smtp.url)
        emails = [f"race{i}@example.org" for i in range(8)]
        for email in emails:
            _queue_signup(settings, db, email)
        reports: list[outbox.DeliveryReport] = []
        start = threading.Barrier(2)

        def sender() -> None:
            start.wait()
            reports.append(outbox.deliver(settings, db, due_only=False))

        threads = [threading.Thread(target=sender) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sum(r.sent for r in reports) == len(emails)
        assert sorted(rcpt for m in smtp.messages for rcpt in m.rcpt_tos) == sorted(emails)
    assert {r.status for r in rows(db)} == {outbox.SENT}


@pytest.mark.parametrize(
    "peer,headers,allowed",
    [
        ("127.0.0.1", {"host": "127.0.0.1:8000"}, True),
        ("::1", {"host": "[::1]:8000"}, True),
        ("127.0.0.1", {"host": "localhost"}, True),
        ("127.0.0.1", {"host": "evil.example"}, False),  # a rebound name
        ("127.0.0.1", {"host": "127.0.0.1", "x-forwarded-for": "203.0.113.9"}, False),
        ("127.0.0.1", {"host": "127.0.0.1", "forwarded": "for=203.0.113.9"}, False),
        ("192.0.2.7", {"host": "127.0.0.1"}, False),
    ],
)
def test_admin_is_only_for_direct_loopback_requests(
    peer: str, headers: dict[str, str], allowed: bool
) -> None:
    from starlette.exceptions import HTTPException
    from starlette.requests import Request

    from papersift.web.routes.admin import require_admin

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/admin/outbox",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": (peer, 50000),
    }
    request = Request(scope)
    if allowed:
        require_admin(request, True)
    else:
        with pytest.raises(HTTPException) as refused:
            require_admin(request, True)
        assert refused.value.status_code == 403
    with pytest.raises(HTTPException):
        require_admin(request, False)  # admin_loopback = 0: never
