"""``papersift daily`` against the loopback arXiv/OAI server with real arXiv API responses.

The whole day (harvest, index, digests, outbox) runs once: a second run the same day
sends no request and no mail; a run killed with SIGKILL in the middle of the harvest is
finished by the next one, which resumes at the next page; a weekday harvest that returns
nothing is a warning; a bad source, a bad day or a day owned by a live process is refused
with nothing written.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from papersift.digest import outbox, tokens
from papersift.digest import subscriptions as subs
from papersift.digest.validation import clean_preferences
from papersift.ingest.harvest import HarvestConfig
from papersift.jobs import InProcessRunner, run_job
from papersift.jobs.daily import run_daily
from papersift.settings import load_settings
from papersift.store.db import Database
from papersift.store.schema import PaperRow
from papersift.store.schema_jobs import DailyRunRow

from .digest_support import PAPERSIFT, SmtpCapture, cli_env
from .harvest_support import Recorder, Reply, replay_server

pytestmark = pytest.mark.timeout(240)

REAL = Path(__file__).parent / "fixtures" / "real" / "atom"
HAND = Path(__file__).parent / "fixtures" / "harvest"
PAGES = {  # arXiv API answers for search_query=all:testing, 10 per page
    "start=0": "q_testing_s0_m10_bc5a6c384fe9.xml",
    "start=10": "q_testing_s10_m10_34e56e15aaac.xml",
    "start=20": "q_testing_s20_m10_348a237fecab.xml",
}
EMPTY = "id_0000.0000_s0_m100_8b51d9633a68.xml"  # a real answer with no entries
TUESDAY, SATURDAY = "2026-12-01", "2026-11-28"


def body(name: str) -> bytes:
    return (REAL / name).read_bytes()


@pytest.fixture
def server() -> Iterator[Recorder]:
    with replay_server() as recorder:
        yield recorder


def script_pages(server: Recorder, hold: threading.Event | None = None) -> None:
    for key, name in PAGES.items():
        if hold is not None and key == "start=10":
            server.script(key, Reply(body=body(name), hold=hold), Reply(body=body(name)))
        else:
            server.script(key, Reply(body=body(name)))


def env(home: Path, server: Recorder, smtp_url: str, **extra: str) -> dict[str, str]:
    settings = {
        "PAPERSIFT_DAILY_SOURCE": "arxiv:all:testing",
        "PAPERSIFT_ARXIV_API_URL": server.url.replace("/oai", "/api/query"),
        "PAPERSIFT_DAILY_MAX": "30",
    }
    return cli_env(home, smtp_url, **{**settings, **extra})


DAILY = ["daily", "--delay", "0", "--backoff", "0.01", "--page-size", "10"]


def daily(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PAPERSIFT, *DAILY, *args], env=environ, capture_output=True, text=True, timeout=180
    )


def papers(db: Database) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).select_from(PaperRow)) or 0)


def confirmed_subscriber(home: Path, email: str) -> None:
    settings = load_settings(home, f"sqlite:///{home / 'papersift.db'}")
    db = Database(settings.db_url)
    try:
        result = subs.subscribe(db, email, clean_preferences(send_empty=True))
        link = tokens.confirm_url(settings, result.subscriber.id, email)
        subs.confirm(db, settings, tokens.token_from_link(link))
        mail = outbox.SignupMail(settings)  # and one sign-up mail waiting in the outbox
        subs.subscribe(db, "waiting@example.org", clean_preferences(), on_signup=mail)
        assert mail.id is not None
    finally:
        db.dispose()


def test_the_whole_day_runs_once(tmp_path: Path, server: Recorder) -> None:
    home = tmp_path / "home"
    with SmtpCapture() as smtp:
        environ = env(home, server, smtp.url)
        assert (
            subprocess.run([*PAPERSIFT, "stats"], env=environ, capture_output=True).returncode == 0
        )
        confirmed_subscriber(home, "reader@example.org")
        script_pages(server)

        first = daily(environ, "--json", "--day", TUESDAY)
        assert first.returncode == 0, first.stderr
        report = json.loads(first.stdout.splitlines()[-1])
        assert report["status"] == "done" and not report["already_done"]
        assert report["since"] == "2026-11-30"
        # the real answers report 214,881 results: the day stops at daily_max and says so
        assert report["warnings"] == [
            "the harvest stopped at daily_max=30 papers; raise it to fetch the rest of the day"
        ]
        steps = report["steps"]
        assert steps["harvest"]["records"] == 30 and steps["harvest"]["added"] == 30
        assert steps["index"]["indexed"] >= 30 and steps["index"]["pending_vectors"] == 0
        assert steps["digests"]["counts"] == {"sent": 1}
        assert steps["outbox"]["sent"] == 1
        assert len(smtp.to("reader@example.org")) == 1
        assert len(smtp.to("waiting@example.org")) == 1
        queries = {r.params["search_query"] for r in server.log}
        assert queries == {"(all:testing) AND submittedDate:[202611300000 TO 202612012359]"}
        assert sorted(r.params["start"] for r in server.log) == ["0", "10", "20"]

        requests, mails = len(server.log), len(smtp.messages)
        second = daily(environ, "--day", TUESDAY)
        assert second.returncode == 0, second.stderr
        assert "already ran" in second.stdout
        assert (len(server.log), len(smtp.messages)) == (requests, mails)  # nothing twice

    db = Database(f"sqlite:///{home / 'papersift.db'}")
    try:
        assert papers(db) == 30
        with db.session() as s:
            (run,) = s.scalars(select(DailyRunRow))
            assert run.day == date(2026, 12, 1) and run.status == "done"
            assert set(run.steps) == {"harvest", "index", "digests", "outbox"}
    finally:
        db.dispose()
    found = subprocess.run(
        [*PAPERSIFT, "search", "testing", "--mode", "hybrid", "--json"],
        env=environ,
        capture_output=True,
        text=True,
    )
    assert found.returncode == 0 and json.loads(found.stdout)["hits"]


def test_killed_run_is_finished_by_the_next(tmp_path: Path, server: Recorder) -> None:
    home = tmp_path / "home"
    hold = threading.Event()
    script_pages(server, hold)
    environ = env(home, server, "none")
    proc = subprocess.Popen(
        [*PAPERSIFT, *DAILY, "--day", TUESDAY],
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert server.on_request("start=10").wait(120), "the second page was never asked for"
        proc.send_signal(signal.SIGKILL)  # while it waits for page 2: page 1 is committed
        proc.wait(30)
    finally:
        hold.set()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    db = Database(f"sqlite:///{home / 'papersift.db'}")
    try:
        assert papers(db) == 10
        with db.session() as s:
            (run,) = s.scalars(select(DailyRunRow))
            assert run.status == "running" and "harvest" not in run.steps
        before = len(server.log)

        rerun = daily(environ, "--json", "--day", TUESDAY)
        assert rerun.returncode == 0, rerun.stderr
        report = json.loads(rerun.stdout.splitlines()[-1])
        assert report["status"] == "done" and report["resumed"] is False  # no step had finished
        assert report["steps"]["harvest"]["resumed"] is True
        assert report["steps"]["harvest"]["records"] == 30
        assert [r.params["start"] for r in server.log[before:]] == ["10", "20"]
        assert papers(db) == 30
        assert "mail(s) kept" not in rerun.stderr  # nothing in the outbox
        again = daily(environ, "--day", TUESDAY)
        assert again.returncode == 0 and "already ran" in again.stdout
    finally:
        db.dispose()


def test_empty_weekday_harvest_warns(tmp_path: Path, server: Recorder) -> None:
    server.script("start=0", Reply(body=body(EMPTY)))
    weekday = daily(env(tmp_path / "a", server, "none"), "--json", "--day", TUESDAY)
    assert weekday.returncode == 0, weekday.stderr
    report = json.loads(weekday.stdout.splitlines()[-1])
    assert report["status"] == "done" and report["steps"]["harvest"]["records"] == 0
    assert any("no papers on a weekday" in w for w in report["warnings"])
    assert "warning:" in weekday.stderr and "no papers on a weekday" in weekday.stderr

    weekend = daily(env(tmp_path / "b", server, "none"), "--json", "--day", SATURDAY)
    assert weekend.returncode == 0, weekend.stderr
    assert json.loads(weekend.stdout.splitlines()[-1])["warnings"] == []


def test_oai_day_in_process(db: Database, tmp_path: Path, server: Recorder) -> None:
    """The same job as a plain function (what a queue worker calls), on SQLite and
    PostgreSQL, with an OAI-PMH source: records from the last finished day to today."""
    server.script("first", Reply(body=(HAND / "oai_page1.xml").read_bytes()))
    server.script("tok-2", Reply(body=(HAND / "oai_page2.xml").read_bytes()))
    server.script("tok-3", Reply(body=(HAND / "oai_page3.xml").read_bytes()))
    settings = load_settings(tmp_path / "home", db.url).replace(
        daily_source=f"oai:{server.url}#cs", smtp_url="none"
    )
    fast = HarvestConfig(delay=0.0, retries=1, backoff=0.01, timeout=5.0)
    report = run_daily(settings, db, day=date(2026, 12, 1), harvest=fast)
    assert report.ok and report.steps["harvest"]["records"] == 5
    first = server.log[0].params
    assert (first["from"], first["until"], first["set"]) == ("2026-11-30", "2026-12-01", "cs")
    assert papers(db) == 5
    # the next day asks from the last finished day on
    server.log.clear()
    server.script("first", Reply(body=(HAND / "oai_page3.xml").read_bytes()))
    later = run_daily(settings, db, day=date(2026, 12, 3), harvest=fast)
    assert later.ok and later.since == date(2026, 12, 1)
    assert server.log[0].params["from"] == "2026-12-01"
    assert run_daily(settings, db, day=date(2026, 12, 3), harvest=fast).already_done
    # the same jobs by name, as a queue or the in-process runner starts them
    assert run_job("daily", settings, db, day="2026-12-03")["already_done"] is True
    runner = InProcessRunner(settings, db)
    try:
        assert runner.defer("mail.deliver").result(30) == outbox.DeliveryReport().to_dict()
        with pytest.raises(KeyError):
            runner.defer("no-such-job")
    finally:
        runner.close()


def test_bad_input_is_refused_and_writes_nothing(tmp_path: Path, server: Recorder) -> None:
    home = tmp_path / "home"
    bad = daily(env(home, server, "none", PAPERSIFT_DAILY_SOURCE="ftp://x"), "--day", TUESDAY)
    assert bad.returncode == 2 and "daily_source must be" in bad.stderr
    bad_day = daily(env(home, server, "none"), "--day", "yesterday")
    assert bad_day.returncode == 2 and "--day must be a date" in bad_day.stderr
    assert "Traceback" not in bad.stderr + bad_day.stderr
    db = Database(f"sqlite:///{home / 'papersift.db'}")
    try:
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(DailyRunRow)) == 0
            # a day owned by a live process (this one) is not run twice at once
            s.add(
                DailyRunRow(
                    day=date(2026, 12, 1),
                    status="running",
                    owner=f"{socket.gethostname()}:{os.getpid()}",
                    heartbeat_at=datetime.now(UTC),
                    started_at=datetime.now(UTC),
                    steps={},
                    warnings=[],
                )
            )
        busy = daily(env(home, server, "none"), "--day", TUESDAY)
        assert busy.returncode == 75 and "is running in" in busy.stderr
        assert server.log == []
    finally:
        db.dispose()
