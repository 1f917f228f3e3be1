"""Rate limits and view de-duplication in Redis (``redis_url``), against the real server on
127.0.0.1:6379: two processes share one limit, two "hosts" count a view once, and a Redis
that is away leaves the app limiting per process (with one warning) instead of failing."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from papersift.store.buckets import RedisBuckets, redis_client
from papersift.store.db import Database
from papersift.web.ratelimit import KeyLimiter, Limit, RateLimiter, ViewCounter, bucket_store

REDIS = "redis://127.0.0.1:6379/0"


@pytest.fixture
def redis_url() -> str:
    try:
        redis_client(REDIS).ping()
    except Exception as exc:
        pytest.skip(f"Redis not reachable on 127.0.0.1:6379: {exc}")
    return REDIS


@pytest.fixture
def scope(redis_url: str):
    """A scope of this test's own; its keys are removed afterwards."""
    name = f"test-{uuid.uuid4().hex[:10]}"
    yield name
    client = redis_client(redis_url)
    for pattern in (f"papersift:bucket:{name}*", f"papersift:view:*|{PAPER}"):
        for key in client.scan_iter(pattern):
            client.delete(key)


PAPER = "2612.54321"


def one_paper(tmp_path: Path) -> Database:
    """A SQLite database with one paper (views are counted for papers that exist)."""
    from papersift.ingest import ingest_paths

    db = Database(f"sqlite:///{tmp_path / 'p.db'}")
    source = tmp_path / "one.jsonl"
    source.write_text(json.dumps({"id": PAPER, "title": "A paper"}) + "\n")
    assert not ingest_paths(db, [source]).failed
    return db


TAKER = """
import sys
from papersift.web.ratelimit import Limit, RateLimiter, bucket_store
url, scope, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
limiter = RateLimiter(
    Limit(10, 0.0001), Limit(1000, 1), store=bucket_store("/nonexistent", redis_url=url),
    scope=scope,
)
print(sum(1 for _ in range(n) if limiter.check("visitor-1", "192.0.2.7") == 0))
"""


def test_two_processes_share_one_limit(redis_url: str, scope: str) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER, redis_url, scope, "15"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    granted = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert "limiting per process" not in err
        granted.append(int(out.strip()))
    assert sum(granted) == 10, granted  # one bucket: not 10 for each process


def test_a_bucket_refills_and_concurrent_takes_are_counted_once(redis_url: str, scope: str) -> None:
    import threading

    now = [1000.0]
    buckets = RedisBuckets(redis_url)
    limit = Limit(capacity=20, rate=1.0)
    waits: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        wait = buckets.take(scope, "k", lambda: now[0], limit.refill)
        with lock:
            waits.append(wait)

    threads = [threading.Thread(target=take) for _ in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert waits.count(0.0) == 20 and len(waits) == 30  # optimistic retries lose nothing
    now[0] += 2.0  # two tokens back
    assert [buckets.take(scope, "k", lambda: now[0], limit.refill) for _ in range(3)][:2] == [
        0.0,
        0.0,
    ]


def test_views_are_counted_once_across_hosts(redis_url: str, scope: str, tmp_path: Path) -> None:
    db = one_paper(tmp_path)
    hosts = [
        ViewCounter(
            "same-secret",
            KeyLimiter(Limit(5, 5 / 86400), bucket_store(tmp_path, redis_url=redis_url), scope),
            redis_url=redis_url,
        )
        for _ in range(2)
    ]
    counted = []
    for host in hosts * 2:
        with db.session() as s:
            counted.append(host.count(s, f"viewer-{scope}", "192.0.2.1", PAPER))
    assert counted == [True, False, False, False]
    with db.session() as s:  # nothing went to the database's marks
        from papersift.store.schema_web import ViewMarkRow

        assert s.query(ViewMarkRow).count() == 0
    db.dispose()


def test_redis_away_means_limits_per_process_not_errors(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from socket import socket

    with socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    away = f"redis://127.0.0.1:{port}/0"
    limiter = RateLimiter(
        Limit(3, 0.0001), Limit(100, 1), store=bucket_store(tmp_path, redis_url=away)
    )
    assert [limiter.check("v", "192.0.2.9") for _ in range(4)][:3] == [0, 0, 0]
    assert limiter.check("v", "192.0.2.9") > 0
    # said once per kind of bucket (visitors, addresses), not per request
    assert sum("limiting per process" in r.message for r in caplog.records) == 2
    db = one_paper(tmp_path)
    counter = ViewCounter("s", redis_url=away)
    with db.session() as s:
        first = counter.count(s, "viewer", "192.0.2.1", PAPER)
        second = counter.count(s, "viewer", "192.0.2.1", PAPER)
    assert (first, second) == (True, False)  # the database's marks took over
    db.dispose()
