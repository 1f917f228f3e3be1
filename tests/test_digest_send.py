"""Digest runs against a real SMTP server on 127.0.0.1, on SQLite and PostgreSQL.

Covers: who gets mail (confirmed only), what is in it (no repeats, nothing new -> no mail),
exactly-once per period, SMTP down / 451 then 250 / 550 and pausing, unsubscribe, one
connection for many messages, the rate limit, dry runs and concurrent runs.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from papersift.digest import subscriptions as subs
from papersift.digest import tokens
from papersift.digest.compose import period_key
from papersift.digest.ledger import CLAIMED, SENDING, UNCERTAIN, Ledger, new_claimer
from papersift.digest.run import DigestRun, run_digests
from papersift.digest.smtp import Mailer, SmtpConfig
from papersift.digest.validation import clean_preferences
from papersift.ingest import ingest_paths
from papersift.settings import Settings, load_settings
from papersift.store.db import Database
from papersift.store.schema import DigestLedgerRow, PaperRow, SentPaperRow, SubscriberRow, VoteRow

from .conftest import SEEDS
from .digest_support import SmtpCapture, free_port

TODAY = date.today()


@pytest.fixture
def smtp():
    with SmtpCapture() as server:
        yield server


@pytest.fixture
def corpus(db: Database, tmp_path: Path, smtp: SmtpCapture) -> tuple[Settings, Database]:
    """The seed corpus in a fresh database (SQLite file or PostgreSQL) and its settings."""
    summary = ingest_paths(db, [SEEDS])
    assert not summary.failed
    settings = load_settings(tmp_path / "home", db.url)
    return settings.replace(smtp_url=smtp.url), db


def add_confirmed(settings: Settings, db: Database, email: str, **prefs) -> subs.Subscriber:
    result = subs.subscribe(db, email, clean_preferences(**prefs))
    sub, changed = subs.confirm(
        db,
        settings,
        tokens.make_token(settings, tokens.CONFIRM, result.subscriber.id, result.subscriber.email),
    )
    assert changed
    return sub


def run(settings: Settings, db: Database, day: date = TODAY, **kw):
    kw.setdefault("backoff", 0.01)
    return run_digests(settings, db, day=day, **kw)


def ledger(db: Database) -> dict[tuple[int, str], str]:
    with db.session() as s:
        return {(r.subscriber_id, r.period): r.status for r in s.scalars(select(DigestLedgerRow))}


def subscriber(db: Database, sub_id: int) -> SubscriberRow:
    with db.session() as s:
        return s.get(SubscriberRow, sub_id)


def sent_count(db: Database, sub_id: int) -> int:
    with db.session() as s:
        return s.scalar(
            select(func.count())
            .select_from(SentPaperRow)
            .where(SentPaperRow.subscriber_id == sub_id)
        )


def paper_links(msg) -> list[str]:
    text = msg.get_body(("plain",)).get_content()
    return [
        line.strip().rsplit("/papers/", 1)[1] for line in text.splitlines() if "/papers/" in line
    ]


def test_only_confirmed_subscribers_get_one_digest_each(corpus, smtp: SmtpCapture) -> None:
    settings, db = corpus
    ada = add_confirmed(settings, db, "ada@example.org", max_papers=5)
    bob = add_confirmed(
        settings, db, "bob@example.org", max_papers=3, collections=["001_871d086d1143f9dd"]
    )
    pending = subs.subscribe(db, "pending@example.org", clean_preferences()).subscriber
    gone = add_confirmed(settings, db, "gone@example.org")
    subs.unsubscribe(
        db, settings, tokens.make_token(settings, tokens.UNSUBSCRIBE, gone.id, gone.email)
    )
    report = run(settings, db)
    assert report.counts() == {"sent": 2}, report.to_dict()
    assert sorted(r for m in smtp.messages for r in m.rcpt_tos) == [
        "ada@example.org",
        "bob@example.org",
    ]
    assert smtp.to(pending.email) == [] and smtp.to(gone.email) == []
    ada_msg = smtp.to("ada@example.org")[0].message
    ids = paper_links(ada_msg)
    assert len(ids) == 5 == len(set(ids)) == sent_count(db, ada.id)
    bob_msg = smtp.to("bob@example.org")[0].message
    bob_ids = paper_links(bob_msg)
    assert len(bob_ids) == 3 == len(set(bob_ids))
    assert "NEW IN 001_871D086D1143F9DD" in bob_msg.get_body(("plain",)).get_content()
    assert ledger(db) == {(ada.id, TODAY.isoformat()): "sent", (bob.id, TODAY.isoformat()): "sent"}
    row = subscriber(db, ada.id)
    assert row.last_digest_at is not None and row.failure_count == 0
    # the same day again: nothing goes out twice
    again = run(settings, db)
    assert again.counts() == {"done": 2}
    assert len(smtp.messages) == 2


def test_nothing_new_means_no_mail_unless_asked(corpus, smtp: SmtpCapture) -> None:
    settings, db = corpus
    quiet = add_confirmed(settings, db, "quiet@example.org", max_papers=4)
    chatty = add_confirmed(settings, db, "chatty@example.org", max_papers=4, send_empty=True)
    assert run(settings, db).count("sent") == 2
    tomorrow = TODAY + timedelta(days=1)
    report = run(settings, db, tomorrow)
    assert {o.email: o.status for o in report.outcomes} == {
        "quiet@example.org": "empty",
        "chatty@example.org": "sent",
    }
    assert len(smtp.to(quiet.email)) == 1
    short = smtp.to(chatty.email)[1].message
    assert "nothing new" in short["Subject"]
    assert "Nothing new" in short.get_body(("plain",)).get_content()
    assert ledger(db)[(quiet.id, tomorrow.isoformat())] == "empty"


def test_a_paper_is_never_sent_twice_but_new_activity_is(
    corpus, smtp: SmtpCapture, tmp_path: Path
) -> None:
    settings, db = corpus
    ada = add_confirmed(settings, db, "ada@example.org", max_papers=5)
    run(settings, db)
    first = set(paper_links(smtp.messages[0].message))
    # tomorrow: one already-mailed paper and one never-mailed paper get votes,
    # and a brand-new paper arrives
    with db.session() as s:
        from papersift.store.schema import PaperRow

        unsent = s.scalar(select(PaperRow.id).where(PaperRow.id.not_in(first)).limit(1))
        now = datetime.now(UTC)
        for pid in (next(iter(first)), unsent):
            s.add(VoteRow(paper_id=pid, visitor_id="v1", created_at=now))
    new = tmp_path / "new.jsonl"
    new.write_text(
        json.dumps(
            {"id": "2999.00001", "title": "A brand new paper on digests", "abstract": "Fresh."}
        )
        + "\n"
    )
    assert not ingest_paths(db, [new]).failed
    run(settings, db, TODAY + timedelta(days=1))
    second = paper_links(smtp.messages[1].message)
    assert set(second) == {unsent, "2999.00001"}
    assert not first & set(second)
    assert sent_count(db, ada.id) == len(first) + 2


def test_smtp_down_is_retried_then_recorded_and_nothing_marked_sent(corpus) -> None:
    settings, db = corpus
    ada = add_confirmed(settings, db, "ada@example.org")
    add_confirmed(settings, db, "bob@example.org")
    down = settings.replace(smtp_url=f"smtp://127.0.0.1:{free_port()}")
    sleeps: list[float] = []
    mailer = Mailer(
        SmtpConfig.from_url(down.smtp_url), retries=3, backoff=0.01, sleep=sleeps.append
    )
    report = run(down, db, mailer=mailer)
    assert sleeps == [0.01, 0.02, 0.04]  # exponential backoff, bounded retries
    assert report.aborted and "cannot connect" in report.aborted
    assert report.counts() == {"failed": 1}  # the run stops instead of hammering
    assert not report.ok
    assert ledger(db) == {(ada.id, TODAY.isoformat()): "failed"}
    row = subscriber(db, ada.id)
    assert row.last_digest_at is None and "cannot connect" in row.last_error
    assert row.failure_count == 0  # not the subscriber's fault
    assert sent_count(db, ada.id) == 0


def test_failed_digest_is_sent_once_when_smtp_is_back(corpus, smtp: SmtpCapture) -> None:
    settings, db = corpus
    add_confirmed(settings, db, "ada@example.org")
    down = settings.replace(smtp_url=f"smtp://127.0.0.1:{free_port()}")
    assert run(down, db, retries=0).count("failed") == 1
    report = run(settings, db)
    assert report.counts() == {"sent": 1}
    assert len(smtp.messages) == 1
    assert run(settings, db).counts() == {"done": 1}


@pytest.mark.parametrize("stage", ["data", "rcpt"])
def test_451_then_250_is_delivered_once(corpus, smtp: SmtpCapture, stage: str) -> None:
    settings, db = corpus
    ada = add_confirmed(settings, db, "ada@example.org")
    replies = smtp.handler.data_replies if stage == "data" else smtp.handler.rcpt_replies
    replies.append("451 4.3.0 Try again later")
    report = run(settings, db)
    assert report.counts() == {"sent": 1}
    assert report.outcomes[0].attempts == 2
    assert len(smtp.messages) == 1 and smtp.messages[0].rcpt_tos == [ada.email]
    assert ledger(db) == {(ada.id, TODAY.isoformat()): "sent"}


def test_550_is_recorded_and_repeats_pause_the_address(corpus, smtp: SmtpCapture) -> None:
    settings, db = corpus
    bad = add_confirmed(settings, db, "nobody@example.org", max_papers=2)
    good = add_confirmed(settings, db, "ada@example.org", max_papers=2, send_empty=True)
    for i in range(3):
        smtp.handler.rcpt_replies.append("550 5.1.1 No such user")
        report = run(settings, db, TODAY + timedelta(days=i), pause_after=3)
        statuses = {o.email: o.status for o in report.outcomes}
        assert statuses == {bad.email: "bounced", good.email: "sent"}, report.to_dict()
        row = subscriber(db, bad.id)
        assert row.failure_count == i + 1 and "550" in row.last_error
        assert row.status == ("paused" if i == 2 else "confirmed")
        assert report.ok  # a bounce is the subscriber's problem, not the run's
    assert report.paused == [bad.email]
    assert smtp.to(bad.email) == [] and sent_count(db, bad.id) == 0
    # paused: not even attempted any more
    report = run(settings, db, TODAY + timedelta(days=3))
    assert [o.email for o in report.outcomes] == [good.email]
    assert smtp.handler.rcpt_seen == 6 + 1


def test_a_success_resets_the_failure_count(corpus, smtp: SmtpCapture) -> None:
    settings, db = corpus
    ada = add_confirmed(settings, db, "ada@example.org", max_papers=2)
    smtp.handler.rcpt_replies.append("550 5.2.2 Mailbox full")
    run(settings, db)
    assert subscriber(db, ada.id).failure_count == 1
    assert run(settings, db).counts() == {"done": 1}  # bounced: not retried the same day
    run(settings, db, TODAY + timedelta(days=1))
    row = subscriber(db, ada.id)
    assert (row.failure_count, row.last_error, row.status) == (0, None, "confirmed")


def test_unsubscribed_address_gets_nothing_more(corpus, smtp: SmtpCapture) -> None:
    settings, db = corpus
    ada = add_confirmed(settings, db, "ada@example.org", max_papers=2, send_empty=True)
    run(settings, db)
    msg = smtp.messages[0].message
    link = str(msg["List-Unsubscribe"]).split(",")[0].strip("<> ")
    sub, changed = subs.unsubscribe(db, settings, tokens.token_from_link(link))
    assert changed and sub.status == "unsubscribed"
    assert subs.unsubscribe(db, settings, tokens.token_from_link(link))[1] is False
    report = run(settings, db, TODAY + timedelta(days=1))
    assert report.outcomes == []
    assert len(smtp.to(ada.email)) == 1


def test_one_connection_for_all_messages_and_rate_limit(corpus, smtp: SmtpCapture) -> None:
    settings, db = corpus
    for i in range(5):
        add_confirmed(settings, db, f"user{i}@example.org", max_papers=1)
    mailer = Mailer(SmtpConfig.from_url(settings.smtp_url), rate=20)
    report = run(settings, db, mailer=mailer)
    mailer.close()
    assert report.count("sent") == 5
    assert mailer.connections == 1
    assert len({m.peer for m in smtp.messages}) == 1  # the server saw one client socket
    # 20 msgs/s: sends start 50 ms apart, so five arrivals span at least ~200 ms (minus the
    # delivery time of the first one)
    span = smtp.messages[-1].at - smtp.messages[0].at
    assert span >= 0.15


def test_dry_run_composes_but_writes_and_sends_nothing(corpus, smtp: SmtpCapture) -> None:
    settings, db = corpus
    add_confirmed(settings, db, "ada@example.org")
    report = run(settings, db, dry_run=True)
    assert report.counts() == {"would-send": 1} and report.composed == 1
    assert smtp.messages == [] and ledger(db) == {}
    assert run(settings, db).counts() == {"sent": 1}


def test_weekly_subscribers_get_one_digest_per_iso_week(corpus, smtp: SmtpCapture) -> None:
    settings, db = corpus
    add_confirmed(
        settings, db, "weekly@example.org", frequency="weekly", max_papers=3, send_empty=True
    )
    monday = TODAY - timedelta(days=TODAY.weekday())
    assert run(settings, db, monday).count("sent") == 1
    assert run(settings, db, monday + timedelta(days=3)).counts() == {"done": 1}
    assert run(settings, db, monday + timedelta(days=7)).count("sent") == 1
    assert len(smtp.messages) == 2
    assert "weekly" in smtp.messages[0].message["Subject"]


def test_concurrent_runs_in_threads_never_double_send(corpus, smtp: SmtpCapture) -> None:
    settings, db = corpus
    emails = [f"user{i}@example.org" for i in range(12)]
    for e in emails:
        add_confirmed(settings, db, e, max_papers=2)
    smtp.handler.data_delay = 0.02
    reports = []
    barrier = threading.Barrier(3)

    def go() -> None:
        barrier.wait()
        reports.append(DigestRun(settings, db, day=TODAY, backoff=0.01).run())

    threads = [threading.Thread(target=go) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r for m in smtp.messages for r in m.rcpt_tos) == sorted(emails)
    assert sum(r.count("sent") for r in reports) == 12
    assert set(ledger(db).values()) == {"sent"}


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"rate": -1}, "rate must be >= 0"),
        ({"retries": -2, "backoff": -0.5}, "retries must be >= 0, got -2; backoff must be >= 0"),
        ({"pause_after": 0}, "pause after must be >= 1"),
        ({"emails": ["not an address"]}, "must not contain spaces"),
        ({"emails": ["ada@example.org\r\nBcc: x@y"]}, "control characters"),
    ],
    ids=["rate", "retries-backoff", "pause-after", "bad-only", "header-injection"],
)
def test_a_run_with_bad_options_is_refused_before_anything_is_written(
    corpus, smtp: SmtpCapture, options: dict, says: str
) -> None:
    settings, db = corpus
    add_confirmed(settings, db, "ada@example.org")
    with pytest.raises(ValueError, match=says):
        DigestRun(settings, db, day=TODAY, **options)
    assert ledger(db) == {} and smtp.messages == []


def test_a_run_with_an_unusable_sender_or_smtp_url_is_refused(corpus, smtp: SmtpCapture) -> None:
    settings, db = corpus
    add_confirmed(settings, db, "ada@example.org")
    with pytest.raises(ValueError, match="PAPERSIFT_MAIL_FROM"):
        DigestRun(settings.replace(mail_from="nobody"), db, day=TODAY)
    with pytest.raises(ValueError, match="smtp://"):
        DigestRun(settings.replace(smtp_url="http://mail.example.org"), db, day=TODAY)
    # a dry run never connects, so its SMTP URL does not matter
    report = run(settings.replace(smtp_url="http://mail.example.org"), db, dry_run=True)
    assert report.counts() == {"would-send": 1}
    assert ledger(db) == {} and smtp.messages == []


def test_only_accepts_addresses_as_typed_and_matches_them_normalised(
    corpus, smtp: SmtpCapture
) -> None:
    settings, db = corpus
    add_confirmed(settings, db, "ada@example.org")
    add_confirmed(settings, db, "bob@example.org")
    report = run(settings, db, emails=["  Ada@Example.ORG "])
    assert [o.email for o in report.outcomes] == ["ada@example.org"]
    assert [m.rcpt_tos for m in smtp.messages] == [["ada@example.org"]]


def test_the_ledger_moves_a_row_only_from_the_state_it_was_read_in(corpus) -> None:
    settings, db = corpus
    sub = add_confirmed(settings, db, "ada@example.org")
    with db.session() as s:
        papers = list(s.scalars(select(PaperRow.id).order_by(PaperRow.id).limit(2)))
    one, two = Ledger(db, new_claimer()), Ledger(db, new_claimer())
    period = period_key("daily", TODAY)
    assert one.claim(sub.id, period, None, CLAIMED, papers, "<m@x>")
    assert not two.claim(sub.id, period, None, CLAIMED, papers, "<m@x>")  # the row exists
    prev = one.entries([period])[(sub.id, period)]
    assert two.claim(sub.id, period, prev, CLAIMED, papers, "<m@x>")  # taken over as read
    assert not one.claim(sub.id, period, prev, CLAIMED, papers, "<m@x>")  # no longer as read
    one.sending(sub.id, period)  # no longer one's row: nothing changes
    assert ledger(db)[(sub.id, period)] == CLAIMED
    two.sending(sub.id, period)
    assert ledger(db)[(sub.id, period)] == SENDING
    assert not one.uncertain(sub.id, period, one.claimer, papers, "gone")  # not one's
    assert one.uncertain(sub.id, period, two.claimer, papers, "gone")
    assert ledger(db)[(sub.id, period)] == UNCERTAIN and sent_count(db, sub.id) == 2
    assert with_attempts(db, sub.id, period) == 2
    subs.unsubscribe(
        db, settings, tokens.make_token(settings, tokens.UNSUBSCRIBE, sub.id, sub.email)
    )
    later = period_key("daily", TODAY + timedelta(days=1))
    assert not one.claim(sub.id, later, None, CLAIMED, papers, "<n@x>")  # not confirmed
    assert (sub.id, later) not in ledger(db)


def with_attempts(db: Database, sub_id: int, period: str) -> int:
    with db.session() as s:
        return s.get(DigestLedgerRow, (sub_id, period)).attempts
