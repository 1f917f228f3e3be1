"""Exactly once under crashes and concurrency: ``papersift digest send`` as real processes.

kill -9 lands while the client waits for the server's reply to a message it has handed
over (the server stores the message, then pauses before answering): the worst moment.
The rerun sends every remaining digest once, never the in-flight one again (it is reported
as uncertain), and two runs started together never send a digest twice. On SQLite and
PostgreSQL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from papersift.digest import subscriptions as subs
from papersift.digest import tokens
from papersift.digest.compose import period_key
from papersift.digest.run import run_digests
from papersift.digest.validation import clean_preferences
from papersift.ingest import ingest_paths
from papersift.settings import Settings, load_settings
from papersift.store.db import Database
from papersift.store.schema import DigestLedgerRow, SentPaperRow

from .conftest import SEEDS
from .digest_support import PAPERSIFT, SmtpCapture, cli_env

pytestmark = pytest.mark.slow
TODAY = date.today()


@pytest.fixture
def smtp():
    with SmtpCapture() as server:
        yield server


@pytest.fixture
def corpus(db: Database, tmp_path: Path, smtp: SmtpCapture) -> tuple[Settings, Database]:
    assert not ingest_paths(db, [SEEDS]).failed
    settings = load_settings(tmp_path / "home", db.url)
    return settings.replace(smtp_url=smtp.url), db


def add_confirmed(settings: Settings, db: Database, n: int) -> list[str]:
    emails = [f"reader{i}@example.org" for i in range(n)]
    for email in emails:
        sub = subs.subscribe(db, email, clean_preferences(max_papers=2)).subscriber
        subs.confirm(db, settings, tokens.make_token(settings, tokens.CONFIRM, sub.id, email))
    return emails


def send_cmd(*extra: str) -> list[str]:
    return [
        *PAPERSIFT,
        "digest",
        "send",
        "--rate",
        "0",
        "--backoff",
        "0.01",
        "--json",
        "--quiet",
        *extra,
    ]


def paper_links(msg) -> list[str]:
    text = msg.get_body(("plain",)).get_content()
    return [ln.strip() for ln in text.splitlines() if "/papers/" in ln]


def statuses(db: Database) -> Counter:
    with db.session() as s:
        return Counter(s.scalars(select(DigestLedgerRow.status)))


def per_recipient(smtp: SmtpCapture) -> Counter:
    return Counter(r for m in smtp.messages for r in m.rcpt_tos)


def test_kill_9_mid_run_then_rerun_sends_each_digest_once(corpus, smtp: SmtpCapture) -> None:
    settings, db = corpus
    emails = add_confirmed(settings, db, 6)
    env = cli_env(settings.home, smtp.url, db.url)
    # the second message is stored, its reply withheld: the client hangs there
    smtp.handler.data_delay, smtp.handler.delay_from = 25.0, 2
    proc = subprocess.Popen(send_cmd(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        smtp.wait_for(2, timeout=60)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert statuses(db) == Counter({"sent": 1, "sending": 1})
    in_flight = smtp.messages[1].rcpt_tos[0]

    smtp.handler.data_delay = 0.0
    rerun = subprocess.run(send_cmd(), env=env, capture_output=True, text=True, timeout=120)
    report = json.loads(rerun.stdout.strip().splitlines()[-1])
    assert rerun.returncode == 1, rerun.stderr  # uncertain digests need a look
    assert report["counts"] == {"done": 1, "uncertain": 1, "sent": 4}
    assert per_recipient(smtp) == Counter({e: 1 for e in emails})  # none missing, none twice
    assert statuses(db) == Counter({"sent": 5, "uncertain": 1})
    with db.session() as s:  # the in-flight digest's papers count as sent: not repeated
        sub = subs.get_by_email(db, in_flight)
        assert (
            s.scalar(
                select(func.count())
                .select_from(SentPaperRow)
                .where(SentPaperRow.subscriber_id == sub.id)
            )
            == 2
        )

    # a third run changes nothing; --retry-uncertain resends it under the same Message-ID
    third = subprocess.run(send_cmd(), env=env, capture_output=True, text=True, timeout=120)
    assert json.loads(third.stdout.strip().splitlines()[-1])["counts"] == {
        "done": 5,
        "uncertain": 1,
    }
    assert len(smtp.messages) == 6
    forced = subprocess.run(
        send_cmd("--retry-uncertain"), env=env, capture_output=True, text=True, timeout=120
    )
    assert forced.returncode == 0, forced.stderr
    copies = smtp.to(in_flight)
    assert len(copies) == 2
    first, again = (c.message for c in copies)
    assert first["Message-ID"] == again["Message-ID"]
    assert paper_links(first) == paper_links(again)  # the same papers, not the next ones


def test_claim_of_a_dead_run_before_sending_is_taken_over(corpus, smtp: SmtpCapture) -> None:
    """A run killed before it handed anything to SMTP leaves 'claimed': provably unsent."""
    settings, db = corpus
    [email] = add_confirmed(settings, db, 1)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    sub = subs.get_by_email(db, email)
    with db.session() as s:
        s.add(
            DigestLedgerRow(
                subscriber_id=sub.id,
                period=period_key("daily", TODAY),
                status="claimed",
                claimed_by=f"{socket.gethostname()[:40]}:{dead.pid}:0123456789",
                claimed_at=datetime.now(UTC),
                attempts=1,
                paper_ids=[],
            )
        )
    report = run_digests(settings, db, day=TODAY, backoff=0.01)
    assert report.counts() == {"sent": 1}
    assert per_recipient(smtp) == Counter({email: 1})


def test_two_processes_at_once_never_double_send(corpus, smtp: SmtpCapture) -> None:
    settings, db = corpus
    emails = add_confirmed(settings, db, 16)
    env = cli_env(settings.home, smtp.url, db.url)
    smtp.handler.data_delay = 0.05  # keep both runs busy at the same time
    procs = [
        subprocess.Popen(
            send_cmd(), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=180) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert per_recipient(smtp) == Counter({e: 1 for e in emails})
    assert sum(r["counts"].get("sent", 0) for r in reports) == 16
    assert statuses(db) == Counter({"sent": 16})
    # and a second wave finds everything done
    time.sleep(0.1)
    again = subprocess.run(send_cmd(), env=env, capture_output=True, text=True, timeout=120)
    assert json.loads(again.stdout.strip().splitlines()[-1])["counts"] == {"done": 16}
    assert len(smtp.messages) == 16
