"""What the web app shows of the job queue: /admin/jobs (administrators only, with a retry
button), /readyz's queue check and /metrics' queue depth, on the PostgreSQL queue and on
the in-process runner of a SQLite app."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from papersift.jobs.queue import open_queue
from papersift.settings import load_settings
from papersift.store.db import Database
from papersift.web.app import create_app

from . import jobs_support
from .accounts_support import make_account, sign_in

pg_url = jobs_support.pg_url  # the fixture


def csrf_from(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


@pytest.mark.postgres
def test_admin_jobs_page_readyz_and_metrics_on_the_postgresql_queue(
    tmp_path: Path,
    pg_url: str,
) -> None:
    settings = load_settings(tmp_path / "home", pg_url).replace(smtp_url="none")
    db = Database(pg_url)
    queue = open_queue(settings, db)
    failed = queue.enqueue("daily", day="not-a-day")
    waiting = queue.enqueue("index.sync")
    assert failed is not None and waiting is not None
    from papersift.jobs.pgqueue import run_worker

    run_worker(settings, db, queues=["default"], wait=False)  # runs both, then returns
    assert queue.job(failed).status == "failed" and queue.job(waiting).status == "succeeded"
    queue.enqueue("index.sync")  # one waiting job for the depth
    reader, admin = make_account(db, "r@example.org"), make_account(db, "a@example.org", admin=True)
    app = create_app(settings, db=db, warm_search=False)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/admin/jobs", follow_redirects=False).status_code in (303, 401)
        sign_in(client, db, reader)
        assert client.get("/admin/jobs").status_code == 403
        sign_in(client, db, admin)
        page = client.get("/admin/jobs")
        assert page.status_code == 200 and "no-store" in page.headers["cache-control"]
        assert "PostgreSQL queue" in page.text and "no papersift worker is running" in page.text
        assert "queued</a> 1" in page.text and "failed</a> 1" in page.text
        assert "day must be YYYY-MM-DD" in page.text
        assert page.text.count(">Retry</button>") == 1
        only = client.get("/admin/jobs?status=failed").text
        assert "index.sync" not in only and "daily" in only
        assert client.get("/admin/jobs?status=bogus").status_code == 400
        forged = client.post(f"/admin/jobs/{failed}/retry", data={"csrf_token": "x"})
        assert forged.status_code == 403 and queue.job(failed).status == "failed"
        done = client.post(
            f"/admin/jobs/{failed}/retry",
            data={"csrf_token": csrf_from(page.text)},
            follow_redirects=False,
        )
        assert done.status_code == 303 and queue.job(failed).status == "queued"
        again = client.post(
            f"/admin/jobs/{failed}/retry", data={"csrf_token": csrf_from(page.text)}
        )
        assert again.status_code == 409
        ready = client.get("/readyz").json()["checks"]["queue"]
        assert ready["ok"] and ready["kind"] == "procrastinate" and ready["waiting"] == 2
        assert ready["workers"] == 0 and "no papersift worker" in ready["warning"]
        metrics = client.get("/metrics").text
        assert 'papersift_queue_depth{queue="default"} 2.0' in metrics
        assert 'papersift_jobs{status="succeeded"} 1.0' in metrics
    queue.close()
    db.dispose()


def test_sqlite_app_runs_jobs_in_process_and_shows_them(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = load_settings(home, f"sqlite:///{home / 'papersift.db'}").replace(smtp_url="none")
    db = Database(settings.db_url)
    admin = make_account(db, "a@example.org", admin=True)
    app = create_app(settings, db=db, warm_search=False)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        state = app.state.web
        jobs = state.jobs()
        assert jobs.kind == "inprocess"
        ok, bad = jobs.enqueue("mail.deliver"), jobs.enqueue("daily", day="nope")
        assert ok is not None and bad is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and jobs.job(bad).status != "failed":
            time.sleep(0.05)
        assert jobs.job(ok).result(30) == {
            "sent": 0, "retry": 0, "failed": 0, "held": 0, "stopped": None, "errors": []
        }  # fmt: skip
        sign_in(client, db, admin)
        page = client.get("/admin/jobs")
        assert "In process" in page.text and "failed</a> 1" in page.text
        assert "succeeded</a> 1" in page.text and "day must be YYYY-MM-DD" in page.text
        ready = client.get("/readyz").json()["checks"]["queue"]
        assert ready == {"ok": True, "kind": "inprocess", "waiting": 0}
        assert 'papersift_jobs{status="failed"} 1.0' in client.get("/metrics").text
    db.dispose()
