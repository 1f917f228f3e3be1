"""The in-process runner of SQLite deployments: the same jobs and retry schedule as the
PostgreSQL queue, in threads of the asking process, against real SQLite and aiosmtpd."""

from __future__ import annotations

import json
import os
import subprocess
from email.message import EmailMessage
from pathlib import Path

from papersift.digest import outbox
from papersift.ingest import ingest_paths
from papersift.jobs import InProcessRunner
from papersift.jobs.queue import open_queue
from papersift.settings import load_settings
from papersift.store.db import Database

from .digest_support import PAPERSIFT, SmtpCapture


def test_runner_retries_a_mail_with_backoff_and_gives_up_on_a_bad_setting(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    with SmtpCapture() as smtp:
        settings = load_settings(home, f"sqlite:///{home / 'p.db'}").replace(smtp_url=smtp.url)
        db = Database(settings.db_url)
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = "p@example.org", "ada@example.org", "Hi"
        msg.set_content("hello")
        with db.session() as s:
            mail_id = outbox.queue(s, msg, kind="confirm")
        smtp.handler.data_replies.extend(["451 4.3.0 later"] * 3)  # the first attempt fails
        runner = InProcessRunner(settings, db, workers=2, delay_scale=0.01)
        try:
            job = runner.defer("mail.deliver", ids=[mail_id], due_only=False)
            report = job.result(60)
            assert job.attempts == 2 and job.status == "succeeded" and report["sent"] == 1
            assert [m.rcpt_tos for m in smtp.messages] == [["ada@example.org"]]
            bad = runner.defer("snapshots.publish")  # no snapshot_url: retrying cannot help
            bad.done.wait(30)
            assert (bad.status, bad.attempts) == ("failed", 1)
            assert bad.error and "no snapshot store" in bad.error
            assert runner.retry(bad.id) is bad
            bad.done.wait(30)
            assert (bad.status, bad.attempts) == ("failed", 1)
            assert [j.status for j in runner.list()] == ["failed", "succeeded"]
        finally:
            runner.close()
            db.dispose()


def test_sqlite_chooses_the_in_process_runner_and_the_cli_says_so(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = load_settings(home, f"sqlite:///{home / 'p.db'}").replace(smtp_url="none")
    db = Database(settings.db_url)
    queue = open_queue(settings, db)
    try:
        assert queue.kind == "inprocess"
        papers = tmp_path / "new.jsonl"
        papers.write_text(
            json.dumps({"id": "2612.00001", "title": "Sparse attention", "abstract": "Fast."})
            + "\n"
            + json.dumps({"id": "2612.00002", "title": "Dense retrieval", "abstract": "Good."})
            + "\n"
        )
        assert not ingest_paths(db, [papers]).failed
        first = queue.enqueue("index.sync")  # the catch-up embeds what was ingested
        assert first is not None
        report = queue.job(first).result(300)
        assert (report["indexed"], report["embedded"]) == (2, 2), report
    finally:
        queue.close()
        db.dispose()
    env = {**os.environ, "PAPERSIFT_HOME": str(home), "PAPERSIFT_SMTP_URL": "none"}
    env.pop("PAPERSIFT_DB", None)
    listed = subprocess.run(
        [*PAPERSIFT, "jobs"], env=env, capture_output=True, text=True, timeout=120
    )
    assert listed.returncode == 0 and "jobs run in process" in listed.stderr
    ran = subprocess.run(
        [*PAPERSIFT, "jobs", "defer", "mail.deliver"],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode == 0 and "job mail.deliver succeeded" in ran.stdout, ran.stderr
