"""Two hosts, one PostgreSQL (issue 16): `papersift serve --workers 2` on 127.0.0.2 and on
127.0.0.3 (separate homes, nothing shared but the database; both follow an empty snapshot
store, so neither builds an index), one `papersift worker`, real aiosmtpd. A sign-up on A is
confirmed on B, a vote on A is counted on B, the per-address vote cap is counted across both,
and `digest send` run on both hosts at once sends each digest once."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import select

from papersift.digest import subscriptions as subs
from papersift.digest import tokens
from papersift.digest.validation import clean_preferences
from papersift.ingest import ingest_paths
from papersift.settings import load_settings
from papersift.store.db import Database
from papersift.store.schema import PaperRow

from . import jobs_support
from .conftest import SEEDS
from .digest_support import SmtpCapture, links_in
from .test_index_checksum import PAPERSIFT, serving

pg_url = jobs_support.pg_url  # the fixture: a database of this module's own
pytestmark = [pytest.mark.postgres, pytest.mark.timeout(900)]

HOST_A, HOST_B = "127.0.0.2", "127.0.0.3"


def env_for(home: Path, db_url: str, smtp_url: str, snaps: Path) -> dict[str, str]:
    return {
        "PAPERSIFT_HOME": str(home),
        "PAPERSIFT_DB": db_url,
        "PAPERSIFT_SMTP_URL": smtp_url,
        "PAPERSIFT_BASE_URL": f"http://{HOST_A}:8000",
        "PAPERSIFT_TRUSTED_HOSTS": f"{HOST_A},{HOST_B}",
        "PAPERSIFT_SNAPSHOT_URL": f"file://{snaps}",
        "PAPERSIFT_QUEUE_DAILY_CRON": "",
        "PAPERSIFT_VOTES_PER_IP_PAPER": "3",
    }


def votes(base: str, pid: str) -> int:
    return int(httpx.get(f"{base}/api/v1/papers/{pid}", timeout=30).json()["votes"])


def vote(base: str) -> int:
    """A new visitor (a page first, for the cookie) upvotes the target paper on ``base``."""
    with httpx.Client(base_url=base, timeout=30) as client:
        client.get("/subscribe")
        return client.post(f"/api/v1/papers/{TARGET}/upvote").status_code


TARGET = ""


def test_two_hosts_share_one_truth(pg_url: str, tmp_path: Path) -> None:
    global TARGET
    started = time.monotonic()
    db = Database(pg_url)
    assert not ingest_paths(db, [SEEDS]).failed
    with db.session() as s:
        TARGET = str(s.scalar(select(PaperRow.id).order_by(PaperRow.id).limit(1)))
    snaps = tmp_path / "snapshots"
    snaps.mkdir()
    home_a, home_b = tmp_path / "a" / "home", tmp_path / "b" / "home"
    home_a.mkdir(parents=True)
    home_b.mkdir(parents=True)
    with SmtpCapture() as smtp:
        env_a = env_for(home_a, pg_url, smtp.url, snaps)
        env_b = env_for(home_b, pg_url, smtp.url, snaps)
        worker_log = (tmp_path / "worker.log").open("w")
        worker = subprocess.Popen(
            [PAPERSIFT, "worker", "--no-periodic"],
            env={**os.environ, **env_a},
            stdout=worker_log,
            stderr=subprocess.STDOUT,
        )
        try:
            with (
                serving(home_a, host=HOST_A, env=env_a, ready_within=300) as (a, _pa),
                serving(home_b, host=HOST_B, env=env_b, ready_within=300) as (b, _pb),
            ):
                # A sign-up on A, its link confirmed on B (one signing key, in PostgreSQL).
                r = httpx.post(f"{a}/api/v1/subscriptions", json={"email": "ada@example.org"})
                assert r.status_code == 202, r.text
                mail = smtp.wait_for(1, timeout=90)[0].message
                link = next(u for u in links_in(mail) if "/subscriptions/confirm" in u)
                token = parse_qs(urlsplit(link).query)["token"][0]
                done = httpx.post(f"{b}/subscriptions/confirm", data={"token": token})
                assert done.status_code == 200, done.text[:500]
                sub = subs.get_by_email(db, "ada@example.org")
                assert sub is not None and sub.status == subs.CONFIRMED

                # A vote on A is counted on B; the per-address cap (3) spans both hosts.
                assert vote(a) == 200
                assert votes(b, TARGET) == 1
                more = [vote(host) for host in (b, a, b, a, b)]
                assert more.count(200) == 2, more
                assert votes(a, TARGET) == votes(b, TARGET) == 3

                # The digest run on both hosts at once: each reader gets one digest.
                settings = load_settings(home_a, pg_url)
                readers = [f"reader{i}@example.org" for i in range(8)]
                for email in readers:
                    new = subs.subscribe(db, email, clean_preferences(max_papers=2)).subscriber
                    confirm = tokens.make_token(settings, tokens.CONFIRM, new.id, email)
                    subs.confirm(db, settings, confirm)
                before = len(smtp.messages)
                cmd = [PAPERSIFT, "digest", "send", "--rate", "0", "--json", "--quiet"]
                runs = [
                    subprocess.Popen(
                        cmd,
                        env={**os.environ, **env},
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                    for env in (env_a, env_b)
                ]
                outs = [p.communicate(timeout=120) for p in runs]
                for p, (_out, err) in zip(runs, outs, strict=True):
                    assert p.returncode == 0, err[-2000:]
                sent = Counter(r for m in smtp.messages[before:] for r in m.rcpt_tos)
                assert all(sent[e] == 1 for e in readers), sent
                assert max(sent.values()) == 1, sent
                reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
                assert sum(r["counts"].get("sent", 0) for r in reports) == sum(sent.values())
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=40)
            except subprocess.TimeoutExpired:
                worker.kill()
            worker_log.close()
    db.dispose()
    print(f"two hosts: {time.monotonic() - started:.0f} s")
