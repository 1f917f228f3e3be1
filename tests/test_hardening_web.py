"""The web attacks that worked, replayed against the real server: vote and view inflation
(cookieless votes, fresh cookies, spoofed X-Forwarded-For on `serve --workers 2`),
mail-bombing through sign-ups (real aiosmtpd), slow clients (trickled headers and bodies),
and a reflected Host header. Each must now fail, and trending must not move."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select

from papersift.rank import votes as vote_service
from papersift.settings import Settings, load_settings
from papersift.store.db import Database
from papersift.store.schema import PaperRow, PaperViewRow, VoteRow
from papersift.store.schema_jobs import OutboxRow

from .conftest import serve_in_thread
from .digest_support import SmtpCapture, copy_home
from .server_support import served


def copy_of(web_home: Path, dest: Path) -> Path:
    copy_home(web_home, dest)
    (dest / "ratelimit.sqlite").unlink(missing_ok=True)
    return dest


def from_address(address: str, **kwargs: object) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127.x.y.z on Linux)."""
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(transport=transport, timeout=30, **kwargs)  # type: ignore[arg-type]


# -- votes and views -----------------------------------------------------------------------
SUPPORTED = {0: 14, 1: 12, 2: 10, 3: 9, 4: 8}  # rank in the id list -> real votes today


def seed_votes(db: Database) -> tuple[list[str], str]:
    """Papers with real support (votes from many visitors, cast directly) and a target
    with none; trending's age cap makes every old seed paper equal in age."""
    with db.session() as s:
        ids = list(s.scalars(select(PaperRow.id).order_by(PaperRow.id).limit(40)))
        now = datetime.now(UTC) - timedelta(minutes=5)
        for rank, count in SUPPORTED.items():
            for n in range(count):
                vote_service.upvote(s, ids[rank], f"real-voter-{rank}-{n}", now=now)
    return ids[: len(SUPPORTED)], ids[30]


def trending_ids(base: str, k: int = len(SUPPORTED)) -> list[str]:
    body = httpx.get(f"{base}/api/v1/trending", params={"window": "day", "k": k}, timeout=30)
    return [p["id"] for p in body.json()["results"]]


def test_vote_and_view_inflation_cannot_move_trending(web_home: Path, tmp_path: Path) -> None:
    home = copy_of(web_home, tmp_path / "home")
    db = Database(f"sqlite:///{home / 'papersift.db'}")
    supported, target = seed_votes(db)
    with served(home, workers=2) as base:
        before = trending_ids(base)
        assert before == supported

        # 1. 110 cookieless upvotes from one address: none counts.
        no_reuse = httpx.Limits(max_keepalive_connections=0)  # spread over both workers
        with httpx.Client(base_url=base, timeout=30, limits=no_reuse) as bot:
            statuses = [bot.post(f"/api/v1/papers/{target}/upvote").status_code for _ in range(110)]
        assert set(statuses) == {403}, statuses

        # 2. 200 fresh visitor cookies, then a view each: the address's daily cap holds.
        for _ in range(200):
            with httpx.Client(base_url=base, timeout=30) as fresh:
                fresh.get("/subscribe")  # a page that issues the cookie
                assert fresh.cookies.get("ps_visitor")
                assert fresh.get(f"/papers/{target}").status_code == 200
        with db.session() as s:
            views = s.scalar(
                select(func.sum(PaperViewRow.count)).where(PaperViewRow.paper_id == target)
            )
        assert (views or 0) <= 5, views

        # 3. 50 voters with cookies and spoofed X-Forwarded-For: the peer is the client.
        accepted = 0
        for n in range(50):
            with httpx.Client(base_url=base, timeout=30, limits=no_reuse) as voter:
                voter.get("/subscribe")
                spoof = {"X-Forwarded-For": f"203.0.113.{n + 1}", "X-Real-IP": f"198.51.100.{n}"}
                r = voter.post(f"/api/v1/papers/{target}/upvote", headers=spoof)
                assert r.status_code in (200, 429), r.text
                accepted += r.status_code == 200
        assert accepted <= 5, accepted

        # Someone else (another address) still votes normally.
        with from_address("127.0.0.2", base_url=base) as neighbour:
            neighbour.get("/subscribe")
            assert neighbour.post(f"/api/v1/papers/{target}/upvote").status_code == 200

        assert trending_ids(base) == before
    with db.session() as s:
        target_votes = s.scalar(select(func.count()).where(VoteRow.paper_id == target))
    assert target_votes is not None and target_votes <= 6
    db.dispose()


def test_forwarded_headers_are_believed_only_from_configured_proxies(
    web_home: Path, tmp_path: Path
) -> None:
    """With forwarded_allow_ips = 127.0.0.1 (nginx on the same host), the address nginx
    reports is the client: two users behind it vote as two addresses, and a client that
    connects directly from elsewhere is not believed."""
    home = copy_of(web_home, tmp_path / "home")
    db = Database(f"sqlite:///{home / 'papersift.db'}")
    with db.session() as s:
        target = s.scalars(select(PaperRow.id).order_by(PaperRow.id).offset(20)).first()
    db.dispose()
    env = {"PAPERSIFT_FORWARDED_ALLOW_IPS": "127.0.0.1", "PAPERSIFT_VOTES_PER_IP_PAPER": "2"}
    with served(home, workers=1, **env) as base:

        def vote(source: str, forwarded: str) -> int:
            with from_address(source, base_url=base) as c:
                c.get("/subscribe", headers={"X-Forwarded-For": forwarded})
                r = c.post(
                    f"/api/v1/papers/{target}/upvote", headers={"X-Forwarded-For": forwarded}
                )
                return r.status_code

        # Through the trusted proxy: each reported address has its own budget of 2.
        assert [vote("127.0.0.1", "192.0.2.1") for _ in range(3)] == [200, 200, 429]
        assert vote("127.0.0.1", "192.0.2.2") == 200
        # Not from the proxy: the header is ignored, the peer 127.0.0.3 is the client.
        assert [vote("127.0.0.3", "192.0.2.9") for _ in range(3)] == [200, 200, 429]
        assert vote("127.0.0.3", "192.0.2.10") == 429


def test_views_count_once_per_visitor_in_the_database(db: Database, tmp_path: Path) -> None:
    """Two apps (two workers or hosts) on one database: one visitor's views of a paper
    count once a day, whichever app answers; the address cap applies across both."""
    from fastapi.testclient import TestClient

    from papersift.web.app import create_app

    with db.session() as s:
        for pid in ("p-one", "p-two"):
            s.add(
                PaperRow(
                    id=pid,
                    title=f"Paper {pid}",
                    title_key=pid,
                    abstract="",
                    authors=[],
                    categories=[],
                    code_urls=[],
                    has_code=False,
                    sources=["test"],
                    first_seen=datetime.now(UTC),
                    modified_at=datetime.now(UTC),
                    content_hash="0" * 40,
                )
            )
    settings = load_settings(tmp_path / "home", db.url).replace(
        secret="s" * 32, views_per_ip_paper=3
    )
    one = create_app(settings, db=db, warm_search=False)
    two = create_app(settings, db=db, warm_search=False)
    with TestClient(one) as a:
        a.get("/subscribe")
        cookie = a.cookies.get("ps_visitor")
        assert cookie
        with TestClient(two, cookies={"ps_visitor": cookie}) as b:
            for _ in range(3):
                assert a.get("/papers/p-one").status_code == 200
                assert b.get("/papers/p-one").status_code == 200
        for _ in range(5):  # new visitors from the same address: 2 more, then the cap
            with TestClient(two) as other:
                other.get("/subscribe")
                other.get("/papers/p-one")

    def views(pid: str) -> int:
        with db.session() as s:
            total = s.scalar(
                select(func.sum(PaperViewRow.count)).where(PaperViewRow.paper_id == pid)
            )
            return int(total or 0)

    assert views("p-one") == 3
    assert views("p-two") == 0


def test_buckets_in_postgresql_are_shared_by_hosts(pg_server_url: str) -> None:
    """Two engines (two hosts) on one PostgreSQL take from the same buckets: 8 threads
    racing for a bucket of 10 get 10 tokens between them, not 10 each."""
    from papersift.store.buckets import DbBuckets
    from papersift.web.ratelimit import KeyLimiter, Limit

    hosts = [Database(pg_server_url), Database(pg_server_url)]
    limiters = [KeyLimiter(Limit(10, 0.0001), DbBuckets(h), "test-shared") for h in hosts]
    granted: list[int] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for _ in range(5):
            ok = limiters[n % 2].take("k") == 0
            with lock:
                granted.append(int(ok))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 10 and len(granted) == 40
    for h in hosts:
        h.dispose()


# -- sign-ups -----------------------------------------------------------------------------
@contextlib.contextmanager
def signup_app(web_home: Path, tmp_path: Path, **changes: object) -> Iterator[tuple[str, Database]]:
    from papersift.web.app import create_app

    home = copy_of(web_home, tmp_path / "home")
    settings: Settings = load_settings(home, f"sqlite:///{home / 'papersift.db'}")
    with SmtpCapture() as smtp:
        settings = settings.replace(smtp_url=smtp.url, **changes)
        db = Database(settings.db_url)
        with serve_in_thread(create_app(settings, db=db, warm_search=False)) as url:
            yield url, db
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and pending_mail(db):
                time.sleep(0.1)
        app_smtp.append(smtp)
        db.dispose()


app_smtp: list[SmtpCapture] = []


def pending_mail(db: Database) -> int:
    with db.session() as s:
        return int(
            s.scalar(select(func.count()).where(OutboxRow.status.in_(("pending", "sending")))) or 0
        )


def outbox_to(db: Database, needle: str) -> int:
    with db.session() as s:
        return int(s.scalar(select(func.count()).where(OutboxRow.recipient.contains(needle))) or 0)


def sign_up(client: httpx.Client, email: str, **headers: str) -> httpx.Response:
    return client.post("/api/v1/subscriptions", json={"email": email}, headers=headers)


def test_plus_tags_cannot_mail_bomb_one_inbox(web_home: Path, tmp_path: Path) -> None:
    app_smtp.clear()
    with signup_app(web_home, tmp_path) as (url, db):
        with httpx.Client(base_url=url, timeout=30) as client:
            statuses = [
                sign_up(client, f"victim+{n}@example.org").status_code for n in range(1, 31)
            ]
        assert statuses.count(202) >= 1 and set(statuses) <= {202, 429}
        with httpx.Client(base_url=url, timeout=30) as spoofer:  # the spoof changes nothing
            spoofed = [
                sign_up(spoofer, f"victim+x{n}@example.org", **{"X-Forwarded-For": f"10.0.0.{n}"})
                for n in range(30)
            ]
        assert {r.status_code for r in spoofed} <= {202, 429}
        assert spoofed[-1].status_code == 429
    smtp = app_smtp[-1]
    delivered = [m for m in smtp.messages if any("victim" in r for r in m.rcpt_tos)]
    assert len(delivered) == 1, len(delivered)
    assert outbox_to(db, "victim") == 1


def test_domain_and_hourly_caps_and_dotless_domains(web_home: Path, tmp_path: Path) -> None:
    app_smtp.clear()
    with signup_app(web_home, tmp_path, signup_mails_per_hour=8) as (url, db):
        with httpx.Client(base_url=url, timeout=30) as client:
            bad = sign_up(client, "root@localhost")
            assert bad.status_code == 422
            assert "dot" in str(bad.json()["errors"])
            same_domain = [sign_up(client, f"user{n}@example.net").status_code for n in range(7)]
        # one domain gets a quarter of the hourly budget, at least 5
        assert same_domain == [202] * 5 + [429] * 2, same_domain
        with from_address("127.0.0.2", base_url=url) as other:
            spread = [sign_up(other, f"someone@domain{n}.org").status_code for n in range(5)]
        assert spread == [202, 202, 202, 429, 429], spread  # 8 in all this hour
        limited = sign_up(other_client := httpx.Client(base_url=url), "late@domain9.org")
        other_client.close()
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    smtp = app_smtp[-1]
    assert len(smtp.messages) == 8
    assert outbox_to(db, "@") == 8


# -- slow clients --------------------------------------------------------------------------
def _trickler(base_port: int, source: str) -> socket.socket | None:
    sock = socket.socket()
    sock.settimeout(5)
    try:
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", base_port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    except OSError:
        sock.close()
        return None
    return sock


def _closed(sock: socket.socket) -> bool:
    """True when the server closed (or refused) the connection."""
    sock.settimeout(0.05)
    try:
        while True:
            data = sock.recv(4096)
            if not data:
                return True
            if b" 503 " in data[:20]:
                continue  # refused at once: the close follows
    except TimeoutError:
        return False
    except OSError:
        return True


def test_trickling_clients_are_dropped_and_others_still_served(
    web_home: Path, tmp_path: Path
) -> None:
    home = copy_of(web_home, tmp_path / "home")
    env = {
        "PAPERSIFT_HEADER_TIMEOUT": "3",
        "PAPERSIFT_BODY_TIMEOUT": "2",
        "PAPERSIFT_MAX_CONNECTIONS_PER_IP": "50",
    }
    with served(home, workers=1, **env) as base:
        port = int(base.rsplit(":", 1)[1])
        started = time.monotonic()
        socks = [s for s in (_trickler(port, "127.0.0.2") for _ in range(200)) if s]
        assert len(socks) == 200
        time.sleep(0.5)
        refused = 0
        for s in socks:  # over the per-address cap: 503 at once
            s.settimeout(0.01)
            with contextlib.suppress(OSError):
                refused += s.recv(64).startswith(b"HTTP/1.1 503")
        assert refused == 150, refused
        # Trickle a header line every half second for up to 8 s.
        t0 = time.monotonic()
        with httpx.Client(base_url=base, timeout=10) as normal:
            answered = time.monotonic()
            assert normal.get("/api/v1/trending").status_code == 200
            assert time.monotonic() - answered < 3.0
        while time.monotonic() - t0 < 8 and not all(_closed(s) for s in socks):
            for s in socks:
                with contextlib.suppress(OSError):
                    s.sendall(b"X-Slow: 1\r\n")
            time.sleep(0.5)
        dropped = time.monotonic() - started
        assert all(_closed(s) for s in socks), "tricklers still open"
        assert dropped < 12, dropped
        for s in socks:
            s.close()
        # A body that stops arriving gets 408 after body_timeout.
        with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
            slow.sendall(
                b"POST /api/v1/subscriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"email"'
            )
            t1 = time.monotonic()
            reply = slow.recv(4096)
            assert reply.startswith(b"HTTP/1.1 408"), reply[:80]
            assert 1.5 < time.monotonic() - t1 < 6
        with httpx.Client(base_url=base, timeout=10) as normal:
            assert normal.get("/healthz").status_code == 200


# -- the Host header -----------------------------------------------------------------------
def test_host_header_is_not_reflected(web_home: Path, tmp_path: Path) -> None:
    from papersift.web.app import create_app

    home = copy_of(web_home, tmp_path / "home")
    settings = load_settings(home, f"sqlite:///{home / 'papersift.db'}")
    public = "https://papers.example.org"
    evil = {"Host": "evil.example"}
    default = create_app(settings.replace(base_url=public), warm_search=False)
    with serve_in_thread(default) as url, httpx.Client(base_url=url, timeout=30) as c:
        refused = c.get("/search/", headers=evil)
        assert refused.status_code == 400 and "PAPERSIFT_TRUSTED_HOSTS" in refused.text
        assert c.get("/search/", headers={"Host": "papers.example.org"}).status_code in (200, 307)
    anyhost = create_app(settings.replace(base_url=public, trusted_hosts="*"), warm_search=False)
    with serve_in_thread(anyhost) as url, httpx.Client(base_url=url, timeout=30) as c:
        redirect = c.get("/search/", headers=evil)
        assert redirect.status_code == 307
        assert redirect.headers["location"] == "/search"
        api = c.get("/api/v1/search", params={"q": "attention", "k": 1}, headers=evil).json()
        assert api["next"].startswith(f"{public}/api/v1/search?")
        assert "evil" not in api["next"] and "offset=1" in api["next"]
        daily = c.get("/api/v1/daily", params={"k": 1}, headers=evil)
        if daily.status_code == 200 and daily.json().get("next"):
            assert daily.json()["next"].startswith(f"{public}/api/v1/daily?")


# -- the migration -------------------------------------------------------------------------
def test_hardening_revision_up_and_down(tmp_path: Path, pg_server_url: str) -> None:
    """0004 adds view_marks and rate_buckets on SQLite and PostgreSQL; downgrading to 0003
    removes them and leaves the votes; upgrading again restores them."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, inspect, text

    from papersift.store.db import MIGRATIONS_DIR

    def alembic(url: str, target: str, *, down: bool = False) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        engine = create_engine(url)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, target)
        engine.dispose()

    pg_admin = create_engine(
        pg_server_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT"
    )
    name = f"hardening_{os.getpid()}"
    with pg_admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    urls = [f"sqlite:///{tmp_path / 'm.db'}", pg_server_url.rsplit("/", 1)[0] + f"/{name}"]
    try:
        for url in urls:
            alembic(url, "0004")
            engine = create_engine(url)
            assert {"view_marks", "rate_buckets"} <= set(inspect(engine).get_table_names())
            engine.dispose()
            alembic(url, "0003", down=True)
            engine = create_engine(url)
            tables = set(inspect(engine).get_table_names())
            engine.dispose()
            assert "view_marks" not in tables and "rate_buckets" not in tables
            assert "votes" in tables
            alembic(url, "head")
            engine = create_engine(url)
            assert {"view_marks", "rate_buckets"} <= set(inspect(engine).get_table_names())
            engine.dispose()
    finally:
        with pg_admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        pg_admin.dispose()
