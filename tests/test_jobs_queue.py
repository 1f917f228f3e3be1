"""The PostgreSQL job queue, end to end: real ``papersift worker`` processes, a real
PostgreSQL database of their own (``papersift_queue_test_<pid>_<hex>``), real aiosmtpd.

Covers: a sign-up mail delivered by a worker after the SMTP server refused the first
attempts (the queue retries with backoff), digests sent exactly once while two workers run
four digest jobs at once, ``papersift jobs`` counts, listing, errors and retry, and a worker
refusing a SQLite database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import func, select

from papersift.digest import outbox, tokens
from papersift.digest import subscriptions as subs
from papersift.digest.validation import clean_preferences
from papersift.ingest import ingest_paths
from papersift.jobs.queue import open_queue
from papersift.settings import Settings, load_settings
from papersift.store.db import Database
from papersift.store.schema import DigestLedgerRow
from papersift.store.schema_jobs import OutboxRow

from . import jobs_support
from .digest_support import PAPERSIFT, SmtpCapture

pg_url = jobs_support.pg_url  # the fixture

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def smtp() -> Iterator[SmtpCapture]:
    with SmtpCapture() as server:
        yield server


def env_for(home: Path, db_url: str, smtp_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PAPERSIFT_HOME=str(home), PAPERSIFT_DB=db_url, PAPERSIFT_SMTP_URL=smtp_url,
        PAPERSIFT_BASE_URL="http://127.0.0.1:8000", PAPERSIFT_QUEUE_DAILY_CRON="",
    )  # fmt: skip
    return env


class Workers:
    """``papersift worker`` processes, logging to files, stopped by SIGTERM."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.procs: list[subprocess.Popen] = []

    def start(self, *args: str) -> subprocess.Popen:
        log = open(self.logs / f"worker{len(self.procs)}.log", "w")
        proc = subprocess.Popen(
            [*PAPERSIFT, "worker", "--no-periodic", *args],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.procs.append(proc)
        return proc

    def log(self) -> str:
        return "\n".join(p.read_text() for p in sorted(self.logs.glob("worker*.log")))

    def stop(self) -> list[int | None]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs:
            try:
                codes.append(proc.wait(timeout=40))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(None)
        return codes


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Workers]]:
    made: list[Workers] = []
    yield made
    for group in made:
        group.stop()


def wait_until(check, timeout: float, what: str, log=lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{log()[-3000:]}")


def papersift(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    wide = {**env, "COLUMNS": "200"}  # the table's rows on one line each
    return subprocess.run(
        [*PAPERSIFT, *args], env=wide, capture_output=True, text=True, timeout=120
    )


def a_mail(to: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "papersift@example.org", to, "Confirm"
    msg.set_content("Open the link to confirm.")
    return msg


def test_worker_delivers_mail_and_the_queue_retries_after_an_smtp_failure(
    tmp_path: Path, pg_url: str, smtp: SmtpCapture, workers: list[Workers]
) -> None:
    home = tmp_path / "home"
    settings = load_settings(home, pg_url).replace(smtp_url=smtp.url)
    db = Database(pg_url)
    with db.session() as s:
        mail_id = outbox.queue(s, a_mail("ada@example.org"), kind="confirm")
    # The first three SMTP attempts (the sender's own quick retries) are refused: the job
    # ends failed for now and the queue runs it again after its backoff.
    smtp.handler.data_replies.extend(["451 4.3.0 try again later"] * 3)
    queue = open_queue(settings, db)
    job_id = queue.enqueue("mail.deliver", ids=[mail_id], due_only=False)
    assert queue.kind == "procrastinate" and job_id is not None
    assert queue.check()["workers"] == 0 and "no papersift worker" in queue.check()["warning"]
    group = Workers(env_for(home, pg_url, smtp.url), tmp_path)
    workers.append(group)
    group.start()

    def sent() -> bool:
        with db.session() as s:
            return s.scalar(select(OutboxRow.status).where(OutboxRow.id == mail_id)) == "sent"

    wait_until(sent, 90, "the mail to be sent", group.log)
    assert [m.rcpt_tos for m in smtp.messages] == [["ada@example.org"]]
    assert smtp.handler.data_seen == 4
    wait_until(lambda: queue.job(job_id).status == "succeeded", 30, "the job to succeed")
    done = queue.job(job_id)
    assert done.attempts == 2 and done.error is None  # the first attempt's error is cleared
    assert queue.check()["workers"] == 1
    listed = json.loads(papersift(env_for(home, pg_url, smtp.url), "jobs", "--json").stdout)
    assert listed["queue"] == "procrastinate" and listed["counts"]["succeeded"] == 1
    assert [(j["id"], j["task"], j["attempts"]) for j in listed["jobs"]] == [
        (job_id, "mail.deliver", 2)
    ]
    assert group.stop() == [0]  # SIGTERM: a clean stop
    assert "Traceback" not in group.log().split("RetryLater")[-1]
    queue.close()
    db.dispose()


def add_confirmed(settings: Settings, db: Database, email: str) -> None:
    result = subs.subscribe(db, email, clean_preferences(send_empty=True))
    token = tokens.make_token(
        settings, tokens.CONFIRM, result.subscriber.id, result.subscriber.email
    )
    assert subs.confirm(db, settings, token)[1]


def test_digests_go_out_once_while_two_workers_run_four_digest_jobs(
    tmp_path: Path, pg_url: str, smtp: SmtpCapture, workers: list[Workers]
) -> None:
    home = tmp_path / "home"
    settings = load_settings(home, pg_url).replace(smtp_url=smtp.url)
    db = Database(pg_url)
    papers = tmp_path / "papers.jsonl"
    papers.write_text(
        "".join(
            json.dumps({"id": f"2612.{n:05d}", "title": f"Paper {n} on sparse attention",
                        "abstract": "We study attention.", "authors": ["A. Author"]}) + "\n"
            for n in range(6)
        )
    )  # fmt: skip
    assert not ingest_paths(db, [papers]).failed
    people = [f"reader{n}@example.org" for n in range(5)]
    for email in people:
        add_confirmed(settings, db, email)
    smtp.handler.data_delay = 0.2  # slow sends, so the jobs overlap
    queue = open_queue(settings, db)
    day = datetime.now(UTC).date().isoformat()
    ids = [queue.enqueue("digests", day=day) for _ in range(4)]
    assert None not in ids
    group = Workers(env_for(home, pg_url, smtp.url), tmp_path)
    workers.append(group)
    group.start("--concurrency", "2")
    group.start("--concurrency", "2")

    def all_done() -> bool:
        return all(queue.job(i).status in ("succeeded", "failed") for i in ids if i)

    wait_until(all_done, 120, "the digest jobs", group.log)
    assert {queue.job(i).status for i in ids if i} == {"succeeded"}, group.log()[-3000:]
    received = sorted(r for m in smtp.messages for r in m.rcpt_tos)
    assert received == sorted(people)  # each reader once, whatever ran twice
    with db.session() as s:
        rows = s.execute(
            select(DigestLedgerRow.status, func.count()).group_by(DigestLedgerRow.status)
        ).all()
    assert dict(rows) == {"sent": len(people)}
    assert group.stop() == [0, 0]
    queue.close()
    db.dispose()


def test_jobs_cli_counts_lists_errors_and_retries(
    tmp_path: Path, pg_url: str, smtp: SmtpCapture
) -> None:
    home = tmp_path / "home"
    env = env_for(home, pg_url, smtp.url)
    bad = papersift(env, "jobs", "defer", "daily", "--arg", "day=yesterday")
    assert bad.returncode == 0 and "queued" in bad.stdout
    settings = load_settings(home, pg_url)
    db = Database(pg_url)
    queue = open_queue(settings, db)
    assert queue.enqueue("index.sync") is not None
    again = papersift(env, "jobs", "defer", "index.sync")  # exclusive: one waits at most
    assert "already waiting" in again.stdout
    listing = papersift(env, "jobs")
    assert listing.returncode == 0, listing.stderr
    assert "2 queued, 0 running, 0 succeeded, 0 failed" in listing.stdout
    assert "no papersift worker is running" in listing.stderr
    ran = papersift(env, "worker", "--once")
    assert ran.returncode == 0, ran.stderr[-3000:]
    [job] = queue.jobs(["failed"])
    assert job.task == "daily" and job.attempts == 1  # a bad argument is not retried
    assert job.error and "day must be YYYY-MM-DD, got 'yesterday'" in job.error
    counts = papersift(env, "jobs").stdout
    assert "0 queued, 0 running, 1 succeeded, 1 failed" in counts
    assert "day must be YYYY-MM-DD" in counts
    retried = papersift(env, "jobs", "retry", str(job.id))
    assert retried.returncode == 0 and f"job {job.id} (daily) is queued again" in retried.stdout
    assert queue.job(job.id).status == "queued" and queue.job(job.id).error is None
    [done] = queue.jobs(["succeeded"])
    nope = papersift(env, "jobs", "retry", str(done.id))
    assert nope.returncode == 1 and "it is succeeded" in nope.stderr
    with pytest.raises(LookupError, match="no such job"):
        queue.retry(999_999)
    wrong = papersift(env, "jobs", "--status", "done")
    assert wrong.returncode == 2 and "--status must be one of" in wrong.stderr
    assert "Traceback" not in wrong.stderr + nope.stderr
    queue.close()
    db.dispose()


def test_worker_needs_postgresql(tmp_path: Path) -> None:
    env = env_for(tmp_path / "home", f"sqlite:///{tmp_path / 'home' / 'p.db'}", "none")
    (tmp_path / "home").mkdir()
    ran = papersift(env, "worker")
    assert ran.returncode == 2 and "needs the PostgreSQL queue" in ran.stderr
    assert "Traceback" not in ran.stderr


def test_a_job_whose_worker_died_is_queued_again(tmp_path: Path, pg_url: str) -> None:
    from sqlalchemy import text

    from papersift.jobs.pgqueue import run_worker

    settings = load_settings(tmp_path / "home", pg_url).replace(smtp_url="none")
    db = Database(pg_url)
    queue = open_queue(settings, db)
    job_id = queue.enqueue("mail.deliver")
    with db.engine.begin() as conn:  # a worker took the job, then died (kill -9) an hour ago
        conn.execute(text("SET LOCAL search_path TO procrastinate"))  # its triggers need it
        dead = conn.execute(
            text(
                "INSERT INTO procrastinate.procrastinate_workers (last_heartbeat) "
                "VALUES (now() - interval '1 hour') RETURNING id"
            )
        ).scalar_one()
        conn.execute(
            text(
                "UPDATE procrastinate.procrastinate_jobs SET status = 'doing', worker_id = :w, "
                "attempts = 0 WHERE id = :id"
            ),
            {"w": dead, "id": job_id},
        )
    assert queue.job(job_id).status == "running"
    rescue = queue._opened().tasks["jobs.rescue"].defer()  # what the worker's clock defers
    run_worker(settings, db, wait=False, concurrency=1)
    assert queue.job(rescue).status == "succeeded"
    assert queue.job(job_id).status in ("queued", "succeeded")  # back in the queue
    run_worker(settings, db, wait=False)  # any live worker then runs it
    assert queue.job(job_id).status == "succeeded"
    queue.close()
    db.dispose()
