"""What bad luck did to a running papersift, replayed for real: kill -9 of an ingest during
its index update, a damaged index generation, another process holding SQLite's write lock,
a PostgreSQL that stops answering behind a TCP proxy, a full disk (a small tmpfs), NUL and
escape codes in records, an old manage link, and two hosts signing links on one PostgreSQL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select, text

from papersift import keys
from papersift.digest import subscriptions as subs
from papersift.digest import tokens
from papersift.digest.validation import Preferences, ValidationError
from papersift.ingest import ingest_paths
from papersift.settings import load_settings
from papersift.store.db import Database
from papersift.store.schema import PaperRow

from .conftest import serve_in_thread
from .digest_support import copy_home

PAPERSIFT = str(Path(sys.executable).with_name("papersift"))


def run_cli(
    home: Path, *args: str, timeout: float = 600, **env: str
) -> subprocess.CompletedProcess:
    environ = {**os.environ, "PAPERSIFT_HOME": str(home), **env}
    environ.pop("PAPERSIFT_DB", None)
    return subprocess.run(
        [PAPERSIFT, *args], env=environ, capture_output=True, text=True, timeout=timeout
    )


def write_corpus(path: Path, n: int, *, start: int = 0, word: str = "record") -> Path:
    """``n`` generic JSONL records, each with a unique searchable token ``<word><i>``."""
    with path.open("w") as fh:
        for i in range(start, start + n):
            fh.write(
                json.dumps(
                    {
                        "id": f"gen-{i}",
                        "title": f"Generic study number {i} of {word}{i}",
                        "abstract": f"We measure {word}{i} and common things across lattices {i}.",
                        "authors": [f"Author {i % 97}"],
                        "date": "2024-05-01",
                    }
                )
                + "\n"
            )
    return path


def no_model(tmp_path: Path) -> dict[str, str]:
    """Environment for a home without an embedding model: keyword-only indexes (fast)."""
    empty = tmp_path / "no-model"
    empty.mkdir(exist_ok=True)
    return {"PAPERSIFT_MODEL_DIR": str(empty)}


def paper_count(home: Path) -> int:
    with contextlib.closing(sqlite3.connect(home / "papersift.db", timeout=30)) as conn:
        try:
            return int(conn.execute("SELECT count(*) FROM papers").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def search_json(home: Path, query: str, env: dict[str, str], k: int = 50) -> dict:
    proc = run_cli(home, "search", query, "--mode", "lexical", "-k", str(k), "--json", **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- item 1: kill -9 during the index update --------------------------------------------------
def test_kill_during_index_update_is_caught_up(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = no_model(tmp_path)
    first = run_cli(home, "ingest", str(write_corpus(tmp_path / "a.jsonl", 200)), **env)
    assert first.returncode == 0, first.stderr
    big = write_corpus(tmp_path / "b.jsonl", 12_000, start=1000, word="kilo")
    environ = {**os.environ, "PAPERSIFT_HOME": str(home), **env}
    environ.pop("PAPERSIFT_DB", None)
    proc = subprocess.Popen(
        [PAPERSIFT, "ingest", str(big)],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill as soon as the database holds the file (its one commit): the index phase has
    # at most just begun.
    deadline = time.monotonic() + 300
    while paper_count(home) < 12_200:
        assert proc.poll() is None, "ingest ended before the kill"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert paper_count(home) == 12_200
    # What the killed run left: the index does not have (all) the new papers.
    left = json.loads((home / "index" / "CURRENT").read_text())["docs"]
    assert left < 12_200, left
    late = search_json(home, "kilo12999", env)
    assert late["total"] == len(late["hits"])  # a count never disagrees with the results

    again = run_cli(home, "ingest", str(big), **env)  # "12,000 unchanged", and catches up
    assert again.returncode == 0, again.stderr
    for token in ("kilo1000", "kilo6500", "kilo12999"):
        found = search_json(home, token, env)
        titles = [h["title"] for h in found["hits"]]
        assert titles == [f"Generic study number {token[4:]} of {token}"], found
        assert found["total"] == 1
    common = search_json(home, "lattices", env, k=100)
    assert common["total"] == 12_200 and len(common["hits"]) == 100
    assert json.loads((home / "index" / "CURRENT").read_text())["docs"] == 12_200


def test_serve_is_ready_first_then_catches_up_in_the_background(tmp_path: Path) -> None:
    """Papers a killed ingest committed but never indexed are indexed by a starting server,
    after its /readyz is 200 (comparing every hash must not hold readiness back)."""
    from .server_support import served

    home = tmp_path / "home"
    env = no_model(tmp_path)
    first = run_cli(home, "ingest", str(write_corpus(tmp_path / "a.jsonl", 30)), **env)
    assert first.returncode == 0, first.stderr
    db = Database(f"sqlite:///{home / 'papersift.db'}")
    # The database commit of an ingest whose index update never ran (killed in between).
    ingest_paths(db, [write_corpus(tmp_path / "late.jsonl", 5, start=500, word="late")])
    db.dispose()
    assert paper_count(home) == 35
    assert search_json(home, "late502", env)["total"] == 0  # a search does not catch up
    with served(home, workers=1, ready_path="/readyz", **env) as base:
        deadline = time.monotonic() + 60
        while True:
            found = httpx.get(f"{base}/api/v1/search", params={"q": "late502"}, timeout=10)
            if found.status_code == 200 and found.json()["total"] == 1:
                break
            assert time.monotonic() < deadline, found.text
            time.sleep(0.2)


# -- item 5: a damaged index generation -------------------------------------------------------
def web_copy(web_home: Path, dest: Path) -> Path:
    copy_home(web_home, dest)
    (dest / "ratelimit.sqlite").unlink(missing_ok=True)
    return dest


def damage_generation(home: Path) -> Path:
    """Overwrite the live generation's tantivy meta.json with garbage (a bad sector)."""
    meta = json.loads((home / "index" / "CURRENT").read_text())
    folder = home / "index" / meta["dir"]
    (folder / "lexical" / "meta.json").write_text("\x00garbage{")
    return folder


def test_damaged_index_is_set_aside_and_rebuilt(web_home: Path, tmp_path: Path) -> None:
    home = web_copy(web_home, tmp_path / "home")
    folder = damage_generation(home)
    settings = load_settings(home, f"sqlite:///{home / 'papersift.db'}")
    from papersift.search.service import forget_services
    from papersift.web.app import create_app

    forget_services()
    db = Database(settings.db_url)
    with db.session() as s:
        pid = s.scalar(select(PaperRow.id).order_by(PaperRow.id).limit(1))
    with serve_in_thread(create_app(settings, db=db, warm_search=False)) as base:
        with httpx.Client(base_url=base, timeout=30) as client:
            first = client.get("/api/v1/search", params={"q": "attention", "mode": "lexical"})
            assert first.status_code in (200, 503), first.text
            if first.status_code == 503:
                assert first.headers["Retry-After"]
            page = client.get(f"/papers/{pid}")
            assert page.status_code == 200  # the paper page never depends on the index
            deadline = time.monotonic() + 120
            while True:
                r = client.get("/api/v1/search", params={"q": "attention", "mode": "lexical"})
                if r.status_code == 200 and r.json()["total"] > 0:
                    break
                assert r.status_code == 503 and "Retry-After" in r.headers, r.text
                assert time.monotonic() < deadline, "the index was not rebuilt"
                time.sleep(0.5)
    set_aside = [p.name for p in (home / "index").iterdir() if p.name.startswith("broken-")]
    assert set_aside == [f"broken-{folder.name}-{set_aside[0].rsplit('-', 1)[1]}"], set_aside
    assert not folder.exists()
    db.dispose()
    forget_services()

    # The command line: search rebuilds in place and answers, with no traceback.
    damage_generation(home)
    proc = run_cli(home, "search", "attention", "--mode", "lexical", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["total"] > 0


# -- item 6: another process holds SQLite's write lock ----------------------------------------
LOCKER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("ROLLBACK")
"""


@pytest.mark.parametrize("damage", ["not sqlite", "docs", "docs_paper", "terms"])
def test_a_damaged_catalog_is_found_at_open_without_counting_it(
    web_home: Path, tmp_path: Path, damage: str
) -> None:
    """Opening a generation reads one row of each catalog table and index (not a count of
    the whole table, 1.3 s at 1M with a cold cache): a catalog that is not SQLite any more
    or whose table or index lost its root page is still caught there and set aside
    (damage deeper in a table is SQLite's ``quick_check``'s to find, in the background)."""
    from papersift.search.generations import Generations
    from papersift.search.vectors import VectorParams

    home = web_copy(web_home, tmp_path / "home")
    meta = json.loads((home / "index" / "CURRENT").read_text())
    folder = home / "index" / meta["dir"]
    generations = Generations(home / "index", VectorParams())
    generations.verify_in_background = False
    live = generations.current()
    assert live is not None and live.folder == folder  # healthy: opens
    live.catalog.close()
    path = folder / "catalog.sqlite"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        roots = dict(conn.execute("SELECT name, rootpage FROM sqlite_master"))
    size = path.stat().st_size
    with path.open("r+b") as fh:  # the size stays, as after a bad sector
        if damage == "not sqlite":
            fh.write(b"\x00garbage" * (size // 9))
        else:  # the root page of one table or index (its schema on page 1 is intact)
            fh.seek((roots[damage] - 1) * page_size)
            fh.write(b"\xa5" * page_size)
    fresh = Generations(home / "index", VectorParams())
    fresh.verify_in_background = False
    assert fresh.current() is None
    assert fresh.damaged and meta["dir"] in fresh.damaged
    assert not folder.exists()
    assert [p.name for p in (home / "index").glob(f"broken-{meta['dir']}-*")]


def test_locked_sqlite_answers_503_fast_and_reads_go_on(web_home: Path, tmp_path: Path) -> None:
    home = web_copy(web_home, tmp_path / "home")
    settings = load_settings(home, f"sqlite:///{home / 'papersift.db'}").replace(
        db_busy_timeout=2.0
    )
    from papersift.web.app import create_app

    app = create_app(settings, warm_search=False)
    db = Database(settings.db_url)
    with db.session() as s:
        pid = s.scalar(select(PaperRow.id).order_by(PaperRow.id).limit(1))
    db.dispose()
    with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        client.get("/subscribe")  # a visitor the server has seen
        locker = subprocess.Popen(
            [sys.executable, "-c", LOCKER, str(home / "papersift.db"), "20"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
            started = time.monotonic()
            vote = client.post(f"/api/v1/papers/{pid}/upvote")
            took = time.monotonic() - started
            assert vote.status_code == 503, vote.text
            assert vote.headers["Retry-After"]
            assert vote.headers["content-type"].startswith("application/problem+json")
            assert took < 8, took
            t0 = time.monotonic()
            assert client.get("/healthz").status_code == 200
            assert time.monotonic() - t0 < 1
            t0 = time.monotonic()
            # reads never wait on the writer (WAL)
            assert client.get(f"/api/v1/papers/{pid}").status_code == 200
            assert client.get("/trending").status_code == 200
            assert time.monotonic() - t0 < 2
        finally:
            locker.kill()
            locker.wait()
        assert client.post(f"/api/v1/papers/{pid}/upvote").status_code == 200  # recovered


# -- item 7: PostgreSQL stops answering --------------------------------------------------------
class FreezingProxy:
    """A TCP proxy on loopback to PostgreSQL that can stop forwarding (a hung server: it
    keeps every connection open and accepts new ones, but no byte goes through)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.flowing = threading.Event()
        self.flowing.set()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                self.flowing.wait()  # frozen: hold the bytes
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.closed = True
        self.flowing.set()
        self.listener.close()


@contextlib.contextmanager
def fresh_pg_database(pg_server_url: str) -> Iterator[str]:
    """A new empty database on the test server, dropped afterwards."""
    from sqlalchemy import create_engine

    name = f"b2_{os.getpid()}_{time.time_ns() % 10**9}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield pg_server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


SEED = Path(__file__).resolve().parents[1] / "src" / "papersift" / "data" / "seeds"


def test_hung_postgres_answers_503_then_recovers(pg_server_url: str, tmp_path: Path) -> None:
    from sqlalchemy.engine import make_url

    from papersift.web.app import create_app

    with fresh_pg_database(pg_server_url) as url:
        db = Database(url)
        assert not ingest_paths(db, [sorted(SEED.glob("*.txt"))[0]]).failed
        with db.session() as s:
            pid = s.scalar(select(PaperRow.id).order_by(PaperRow.id).limit(1))
        db.dispose()
        parsed = make_url(url)
        proxy = FreezingProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
        via_proxy = parsed.set(port=proxy.port).render_as_string(hide_password=False)
        settings = load_settings(tmp_path / "home", via_proxy).replace(
            db_busy_timeout=2.0, db_connect_timeout=2, db_statement_timeout=2.0
        )
        app = create_app(settings, warm_search=False)
        try:
            with serve_in_thread(app) as base, httpx.Client(base_url=base, timeout=60) as c:
                assert c.get(f"/api/v1/papers/{pid}").status_code == 200
                proxy.flowing.clear()
                results: list[tuple[int, float]] = []

                def ask() -> None:
                    t0 = time.monotonic()
                    with httpx.Client(base_url=base, timeout=60) as own:
                        r = own.get(f"/papers/{pid}", headers={"Cache-Control": "no-cache"})
                    results.append((r.status_code, time.monotonic() - t0))

                askers = [threading.Thread(target=ask) for _ in range(12)]
                for t in askers:
                    t.start()
                time.sleep(0.5)
                t0 = time.monotonic()
                assert c.get("/healthz").status_code == 200
                assert time.monotonic() - t0 < 1.0  # liveness never waits on the database
                for t in askers:
                    t.join(timeout=60)
                statuses = {code for code, _ in results}
                assert statuses <= {200, 503}, results  # a cached page may still answer
                assert 503 in statuses, results
                assert max(took for _, took in results) < 15, results
                r = c.get(f"/api/v1/papers/{pid}x-missing")
                assert r.status_code == 503 and r.headers["Retry-After"], r.text
                proxy.flowing.set()
                deadline = time.monotonic() + 30
                while c.get(f"/api/v1/papers/{pid}x-missing").status_code != 404:
                    assert time.monotonic() < deadline, "no recovery without a restart"
                    time.sleep(0.5)
                assert c.get(f"/api/v1/papers/{pid}").status_code == 200
        finally:
            proxy.close()
            app.state.web_state.db.dispose() if hasattr(app.state, "web_state") else None


# -- item 12: NUL and control characters ------------------------------------------------------
HOSTILE = "Null\x00 and \x1b[2J\x1b]0;pwned\x07 bell \x9b31m C1 \x7f"


def test_control_characters_are_removed_at_ingest_on_every_database(
    db: Database, tmp_path: Path
) -> None:
    path = tmp_path / "hostile.jsonl"
    rows = [
        {
            "title": f"Paper {HOSTILE} {i}",
            "abstract": f"Text\ttab\nline {HOSTILE}",
            "authors": [f"Eve\x00 {i}"],
        }
        for i in range(3)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = ingest_paths(db, [path])
    assert not summary.failed, summary.failed[0].error  # PostgreSQL refused NUL: DataError
    with db.session() as s:
        papers = list(s.scalars(select(PaperRow)))
    assert len(papers) == 3
    for paper in papers:
        stored = [paper.title, paper.abstract, *paper.authors]
        for value in stored:
            assert not any(ord(ch) < 32 and ch not in "\t\n" for ch in value), repr(value)
            assert not any(0x7F <= ord(ch) <= 0x9F for ch in value), repr(value)
        assert paper.title.startswith("Paper Null and [2J]0;pwned bell 31m C1")


def test_terminal_output_cannot_carry_escape_sequences(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = no_model(tmp_path)
    assert (
        run_cli(home, "ingest", str(write_corpus(tmp_path / "a.jsonl", 5)), **env).returncode == 0
    )
    # A row written before cleaning existed (or by another tool) still holds escapes.
    with contextlib.closing(sqlite3.connect(home / "papersift.db")) as conn:
        pid = conn.execute("SELECT id FROM papers ORDER BY id LIMIT 1").fetchone()[0]
        conn.execute(
            "UPDATE papers SET title = ?, abstract = ? WHERE id = ?",
            (f"Evil {HOSTILE}", f"Body {HOSTILE}", pid),
        )
        conn.commit()
    colour = {**env, "FORCE_COLOR": "1", "TERM": "xterm-256color"}
    shown = run_cli(home, "show", pid, **colour)
    assert shown.returncode == 0, shown.stderr
    assert "Evil Null and" in shown.stdout
    assert "\x1b[1m" in shown.stdout  # rich's own styling is kept ...
    for bad in ("\x1b[2J", "\x1b]0;", "\x07", "\x9b", "\x00"):  # ... the paper's is not
        assert bad not in shown.stdout, repr(shown.stdout)
    found = run_cli(home, "search", "Evil", "--mode", "lexical", **colour)
    assert found.returncode == 0, found.stderr
    assert "\x1b[2J" not in found.stdout and "\x1b]0;" not in found.stdout


# -- item 13: an old manage link does not resubscribe -----------------------------------------
def test_old_manage_link_cannot_resubscribe_and_manage_links_expire(
    db: Database, tmp_path: Path
) -> None:
    settings = load_settings(tmp_path / "home", db.url).replace(secret="s" * 40)
    result = subs.subscribe(db, "ada@example.org", Preferences(["graphs"]))
    sub = result.subscriber
    confirm = tokens.make_token(settings, tokens.CONFIRM, sub.id, sub.email)
    subs.confirm(db, settings, confirm)
    manage = tokens.make_token(settings, tokens.MANAGE, sub.id, sub.email)
    unsubscribe = tokens.make_token(settings, tokens.UNSUBSCRIBE, sub.id, sub.email)
    subs.unsubscribe(db, settings, unsubscribe)
    with pytest.raises(ValidationError, match="subscribe"):
        subs.resume(db, settings, manage)
    assert subs.get_by_email(db, sub.email).status == subs.UNSUBSCRIBED  # type: ignore[union-attr]
    # Subscribing again is the way back, through a new confirmation.
    again = subs.subscribe(db, sub.email, Preferences(["graphs"]))
    assert again.action == "restarted" and again.subscriber.status == subs.PENDING
    # Manage links live manage_link_days; unsubscribe links keep working forever.
    old = datetime.now(UTC) - timedelta(days=31)
    stale = tokens.make_token(settings, tokens.MANAGE, sub.id, sub.email, now=old)
    with pytest.raises(tokens.TokenError, match="expired"):
        subs.subscriber_for_token(db, settings, tokens.MANAGE, stale)
    longer = settings.replace(manage_link_days=60)
    assert subs.subscriber_for_token(db, longer, tokens.MANAGE, stale).id == sub.id
    old_unsub = tokens.make_token(settings, tokens.UNSUBSCRIBE, sub.id, sub.email, now=old)
    assert subs.subscriber_for_token(db, settings, tokens.UNSUBSCRIBE, old_unsub).id == sub.id


# -- item 2: the signing key lives in PostgreSQL ----------------------------------------------
KEY_RACE = """
import sys
from papersift.keys import signing_key
from papersift.settings import load_settings
print(signing_key(load_settings(sys.argv[1], sys.argv[2])))
"""


def test_two_hosts_on_one_postgres_sign_alike(pg_server_url: str, tmp_path: Path) -> None:
    with fresh_pg_database(pg_server_url) as url:
        Database(url).dispose()  # migrated
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", KEY_RACE, str(tmp_path / f"host{n}"), url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for n in range(8)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), [e for _o, e in outs]
        got = {o.strip() for o, _e in outs}
        assert len(got) == 1 and len(got.pop()) >= 40  # eight hosts at once: one key
        host_a = load_settings(tmp_path / "host0", url)
        host_b = load_settings(tmp_path / "host1", url)
        keys.forget()
        tokens._secrets.clear()
        db = Database(url)
        sub = subs.subscribe(db, "bob@example.org", Preferences(["graphs"])).subscriber
        link = tokens.confirm_url(host_a, sub.id, sub.email)
        assert "secret.key" not in {p.name for p in (tmp_path / "host0").glob("*")}
        confirmed, changed = subs.confirm(db, host_b, tokens.token_from_link(link))
        assert changed and confirmed.status == subs.CONFIRMED
        db.dispose()
    # A SQLite home keeps its key file.
    sqlite_home = load_settings(tmp_path / "solo", f"sqlite:///{tmp_path / 'solo' / 'p.db'}")
    assert keys.signing_key(sqlite_home) == (tmp_path / "solo" / "secret.key").read_text().strip()


# -- item 11: a full disk -----------------------------------------------------------------------
@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (a full disk on demand; needs root)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def unreferenced_segments(index: Path) -> list[str]:
    """Tantivy segment files of the live generation that no commit refers to."""
    folder = index / json.loads((index / "CURRENT").read_text())["dir"] / "lexical"
    meta = (folder / "meta.json").read_text().replace("-", "")
    return [
        p.name
        for p in folder.iterdir()
        if not p.name.startswith(".") and p.suffix != ".json" and p.stem not in meta
    ]


def test_full_disk_leaves_nothing_behind_and_says_so(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = no_model(tmp_path)
    with small_tmpfs(home / "index", "1024k") as index:
        first = run_cli(home, "ingest", str(write_corpus(tmp_path / "a.jsonl", 300)), **env)
        assert first.returncode == 0, first.stderr
        big = write_corpus(tmp_path / "b.jsonl", 8000, start=1000, word="full")
        second = run_cli(home, "ingest", str(big), **env)
        assert second.returncode == 0, second.stderr  # the papers themselves are stored
        assert paper_count(home) == 8300
        assert "search index was not updated" in second.stderr, second.stderr
        assert "disk is full" in second.stderr or "No space left" in second.stderr
        assert unreferenced_segments(index) == []  # a failed write removed its segments
        assert not [p for p in index.rglob("*tmp*")]
        for token in ("record5", "full5000"):  # whatever is searchable, counts agree
            hits = search_json(home, token, env)
            assert hits["total"] == len(hits["hits"]) <= 1, hits
        assert search_json(home, "record5", env)["total"] == 1  # indexed before: still there

        again = run_cli(home, "index")  # with the model: a rebuild that cannot fit
        assert again.returncode == 1, again.stdout + again.stderr
        assert "disk full" in again.stderr and "Traceback" not in again.stderr, again.stderr
        assert [p.name for p in index.iterdir() if p.name.startswith("v")] == [
            json.loads((index / "CURRENT").read_text())["dir"]
        ]  # the failed rebuild's folder is gone
        assert unreferenced_segments(index) == []


def fill(path: Path) -> None:
    """Write zeros to ``path`` until its filesystem is full."""
    with contextlib.suppress(OSError), path.open("wb") as fh:
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()


def test_checksum_check_on_a_full_disk_is_one_line_and_trusts_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The background checksum check adopts a dead writer's leftovers by writing a fresh
    manifest; on a full disk that write fails. It logs one line (no traceback reaches the
    CLI's stderr) and keeps the marker, so the manifest is not trusted until a write works."""
    from papersift.cli import is_disk_full
    from papersift.search.generations import Generations, IndexUnavailable
    from papersift.search.vectors import VectorParams

    home = tmp_path / "home"
    env = no_model(tmp_path)
    with small_tmpfs(home / "index", "1024k") as index:
        first = run_cli(home, "ingest", str(write_corpus(tmp_path / "a.jsonl", 50)), **env)
        assert first.returncode == 0, first.stderr
        (index / ".writing").touch()  # a writer died between its write and its manifest
        generations = Generations(index, VectorParams())
        generations.verify_in_background = False
        assert generations.current() is not None
        fill(index / "filler")
        with caplog.at_level("WARNING", logger="papersift.search.generations"):
            generations.verify_quietly()
        (record,) = [r for r in caplog.records if "checksums" in r.getMessage()]
        assert record.levelname == "WARNING" and record.exc_info is None
        assert "No space left" in record.getMessage()
        assert (index / ".writing").exists()
        assert not [p for p in index.rglob("*.tmp")]  # no half-written manifest left

        # A process opening the index now cannot create SQLite's shared-memory file: the
        # index is unavailable (disk full), not damaged, and nothing is set aside.
        live = json.loads((index / "CURRENT").read_text())["dir"]
        opened = generations.current()
        assert opened is not None
        opened.catalog.close()  # the last connection: SQLite removes its -wal and -shm files
        assert not list((index / live).glob("catalog.sqlite-shm"))
        fill(index / "filler2")  # what closing freed
        fresh = Generations(index, VectorParams())
        fresh.verify_in_background = False
        with pytest.raises(IndexUnavailable, match="full") as raised:
            fresh.current()
        assert is_disk_full(raised.value)
        assert fresh.damaged is None and (index / live).is_dir()
        assert not [p for p in index.iterdir() if p.name.startswith("broken-")]


def test_keys_revision_up_and_down(tmp_path: Path, pg_server_url: str) -> None:
    """0006 adds signing_keys on SQLite and PostgreSQL, keeps the key across a stay at head,
    and downgrading to 0005 removes only it."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine, inspect

    from papersift.store.db import MIGRATIONS_DIR

    def alembic(url: str, target: str, *, down: bool = False) -> None:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        engine = create_engine(url)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(cfg, target)
        engine.dispose()

    def tables(url: str) -> set[str]:
        engine = create_engine(url)
        try:
            return set(inspect(engine).get_table_names())
        finally:
            engine.dispose()

    with fresh_pg_database(pg_server_url) as pg_url:
        for url in (f"sqlite:///{tmp_path / 'm.db'}", pg_url):
            alembic(url, "head")
            assert "signing_keys" in tables(url)
            db = Database(url)
            from papersift.store import keys as key_store

            with db.session() as s:
                first = key_store.get_or_create(s, "default", "a" * 43)
            with db.session() as s:
                assert key_store.get_or_create(s, "default", "b" * 43) == first == "a" * 43
            db.dispose()
            alembic(url, "0005", down=True)
            assert "signing_keys" not in tables(url) and "papers" in tables(url)
            alembic(url, "head")
            assert "signing_keys" in tables(url)


def test_keyword_search_comes_before_embedding_and_embedding_resumes(tmp_path: Path) -> None:
    """With the model: the ingest's index update makes papers keyword-searchable before it
    embeds them; killed while embedding, `papersift index` finishes the vectors."""
    home = tmp_path / "home"
    first = run_cli(home, "ingest", str(write_corpus(tmp_path / "a.jsonl", 20)))
    assert first.returncode == 0, first.stderr
    current = home / "index" / "CURRENT"
    big = write_corpus(tmp_path / "b.jsonl", 2500, start=1000, word="vec")
    environ = {**os.environ, "PAPERSIFT_HOME": str(home)}
    environ.pop("PAPERSIFT_DB", None)
    proc = subprocess.Popen(
        [PAPERSIFT, "ingest", str(big)],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while json.loads(current.read_text()).get("docs") != 2520:  # the keyword phase is done
        assert proc.poll() is None, "ingest ended before its keyword phase was seen"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    meta = json.loads(current.read_text())
    assert meta["vectors"] < 2520  # embedding has not finished
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    found = search_json(home, "vec3499", {})
    assert found["total"] == 1 and found["hits"][0]["title"].endswith("vec3499")
    done = run_cli(home, "index", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["pending_vectors"] == 0, report
    meta = json.loads(current.read_text())
    assert meta["docs"] == meta["vectors"] == 2520
    semantic = run_cli(home, "search", "vec3499 lattices", "--mode", "semantic", "--json")
    assert semantic.returncode == 0, semantic.stderr
