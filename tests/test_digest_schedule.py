"""The in-process digest scheduler, alone and inside ``papersift serve --digests``."""

from __future__ import annotations

import signal
import threading
import time
from datetime import datetime
from pathlib import Path

import pytest

from papersift.digest import subscriptions as subs
from papersift.digest import tokens
from papersift.digest.schedule import start_scheduler
from papersift.digest.validation import clean_preferences
from papersift.settings import SettingsError, load_settings
from papersift.store.db import Database

from .digest_support import SmtpCapture, cli_env, copy_home, free_port
from .server_support import start_serve, stop, wait_until_up


@pytest.fixture
def smtp():
    with SmtpCapture() as server:
        yield server


@pytest.fixture
def setup(seeded_home: Path, tmp_path: Path, smtp: SmtpCapture):
    home = copy_home(seeded_home, tmp_path / "home")
    settings = load_settings(home, f"sqlite:///{home / 'papersift.db'}").replace(smtp_url=smtp.url)
    db = Database(settings.db_url)
    sub = subs.subscribe(db, "sched@example.org", clean_preferences(max_papers=2)).subscriber
    subs.confirm(db, settings, tokens.make_token(settings, tokens.CONFIRM, sub.id, sub.email))
    yield settings, db
    db.dispose()


def test_scheduler_waits_for_the_hour_then_sends_once(setup, smtp: SmtpCapture) -> None:
    settings, db = setup
    now = {"t": datetime.now().replace(hour=5, minute=0)}
    reports = []
    ran = threading.Event()

    def on_report(report) -> None:
        reports.append(report)
        ran.set()

    stop = start_scheduler(
        settings, db, hour=7, interval=0.05, rate=0, clock=lambda: now["t"], on_report=on_report
    )
    try:
        time.sleep(0.3)
        assert reports == [] and smtp.messages == []  # 05:00: too early
        now["t"] = now["t"].replace(hour=7, minute=1)
        assert ran.wait(20)
        time.sleep(0.3)  # more wake-ups: the clean run of today is not repeated
    finally:
        stop()
    assert [r.counts() for r in reports] == [{"sent": 1}]
    assert len(smtp.messages) == 1


def test_serve_with_digests_sends_from_the_server_process(setup, smtp: SmtpCapture) -> None:
    settings, _db = setup
    port = free_port()
    env = cli_env(settings.home, smtp.url, PAPERSIFT_DIGEST_HOUR="0")
    log_path, out_path = settings.home.parent / "serve.log", settings.home.parent / "serve.out"
    with log_path.open("w") as log, out_path.open("w") as out:
        proc = start_serve(port, env, log, out=out, args=("--digests",))
        try:
            smtp.wait_for(1, timeout=60)
            # and the web app serves alongside
            assert wait_until_up(proc, f"http://127.0.0.1:{port}/healthz", timeout=30) is not None
        finally:
            proc.send_signal(signal.SIGINT)
            stop(proc, timeout=60)
    assert "digest scheduler on" in out_path.read_text(), log_path.read_text()[-2000:]
    assert [m.rcpt_tos for m in smtp.messages] == [["sched@example.org"]]


def test_bad_digest_hour_is_a_clear_error(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    settings, _db = setup
    monkeypatch.setenv("PAPERSIFT_DIGEST_HOUR", "25")
    with pytest.raises(SettingsError, match="PAPERSIFT_DIGEST_HOUR.*less than or equal to 23"):
        load_settings(settings.home)
