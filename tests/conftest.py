"""Shared fixtures: real SQLite files, the real PostgreSQL server, the seed corpus.

PostgreSQL tests use a throw-away database created on 127.0.0.1:5432 for the session and
dropped at the end; tables are emptied between tests instead of re-created, to stay fast.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from papersift.store.db import Database
from papersift.store.schema import Base

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "src" / "papersift" / "data" / "seeds"


def _shared_folder() -> Path:
    """The team's shared folder (evaluation collections): $PAPERSIFT_SHARED, else
    ``../shared`` beside this checkout, else beside the local repository it was cloned
    from (CI tests a fresh clone that may live elsewhere)."""
    if env := os.environ.get("PAPERSIFT_SHARED"):
        return Path(env)
    here = ROOT.parent / "shared"
    if here.is_dir():
        return here
    try:
        origin = subprocess.run(
            ["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return here
    beside_origin = Path(origin.removeprefix("file://")).parent / "shared"
    return beside_origin if origin and beside_origin.is_dir() else here


SHARED = _shared_folder()
PG_ADMIN_URL = os.environ.get(
    "PAPERSIFT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
# Real MiniLM embeddings of the same seed texts are reused across test sessions (search).
os.environ.setdefault(
    "PAPERSIFT_EMBED_CACHE", str(Path.home() / ".cache" / "papersift" / "test-embeddings")
)


def _pg_available() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return str(exc).splitlines()[0]


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database for this test session (dropped afterwards)."""
    problem = _pg_available()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required in CI: {problem}")
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    name = f"papersift_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _truncate_all(db: Database) -> None:
    names = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    with db.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(scope="session")
def _pg_database(pg_server_url: str) -> Iterator[Database]:
    db = Database(pg_server_url)
    yield db
    db.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty, migrated database: a new SQLite file, or the emptied PostgreSQL test db."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'papersift.db'}")
        yield database
        database.dispose()
    else:
        database = request.getfixturevalue("_pg_database")
        _truncate_all(database)
        yield database


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'papersift.db'}")
    yield database
    database.dispose()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private PAPERSIFT_HOME (SQLite default) for CLI tests."""
    path = tmp_path / "home"
    monkeypatch.setenv("PAPERSIFT_HOME", str(path))
    monkeypatch.delenv("PAPERSIFT_DB", raising=False)
    return path


@pytest.fixture(scope="session")
def seeded_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home with the five seed pages ingested (shared, read-only for tests)."""
    from papersift.ingest import ingest_paths

    path = tmp_path_factory.mktemp("seeded") / "home"
    database = Database(f"sqlite:///{path / 'papersift.db'}")
    summary = ingest_paths(database, [SEEDS])
    assert not summary.failed, summary.failed
    database.dispose()
    return path


# --- web app fixtures -----------------------------------------------------------------

# Papers the seeds do not have: an old-style arXiv id with a slash, and hostile text that
# every page must show escaped.
WEB_EXTRA_PAPERS = [
    {
        "id": "hep-th/9901001",
        "title": "Strings on a slash: an old-style arXiv id",
        "abstract": "We study branes where $x<y$ & $a_1^2$ hold, for <b>bold</b> readers.",
        "authors": ["Ada Lovelace", "Alan Turing"],
        "code_urls": ["https://github.com/example/strings"],
    },
    {
        "id": "phostile00001",
        "title": "<script>alert('title')</script> & \"quotes\"",
        "abstract": "Abstract with </textarea><img src=x onerror=alert(1)> and a & b < c "
        "and {{ 7*7 }} and $\\frac{1}{2}$ math.",
        "authors": ["<b>Mallory</b>"],
        "code_urls": ["javascript:alert(1)"],
    },
]


def _insert_web_extras(database: Database) -> None:
    from datetime import UTC, datetime

    from papersift.model import normalize_title
    from papersift.store.schema import PaperRow

    now = datetime.now(UTC)
    with database.session() as s:
        for p in WEB_EXTRA_PAPERS:
            s.add(
                PaperRow(
                    id=p["id"],
                    title=p["title"],
                    title_key=normalize_title(p["title"]),
                    abstract=p["abstract"],
                    authors=p["authors"],
                    categories=["hep-th"],
                    code_urls=p["code_urls"],
                    has_code=True,
                    sources=["test"],
                    arxiv_id=p["id"] if "/" in p["id"] else None,
                    first_seen=now,
                    modified_at=now,
                    content_hash="0" * 40,
                )
            )


@pytest.fixture(scope="session")
def web_home(seeded_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of the seeded home plus WEB_EXTRA_PAPERS, search index built."""
    import shutil

    from papersift.settings import load_settings

    path = tmp_path_factory.mktemp("web") / "home"
    shutil.copytree(seeded_home, path)
    settings = load_settings(path, f"sqlite:///{path / 'papersift.db'}")
    database = Database(settings.db_url)
    _insert_web_extras(database)
    from papersift.search import get_service

    get_service(settings, database).rebuild()
    database.dispose()
    return path


@contextlib.contextmanager
def serve_in_thread(app) -> Iterator[str]:
    """``app`` under a real uvicorn on 127.0.0.1 (free port) in a thread; yields its URL."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # As `papersift serve` runs it: the app alone decides whom X-Forwarded-For is believed
    # from (forwarded_allow_ips); uvicorn's default would trust 127.0.0.1.
    config = uvicorn.Config(app, log_level="warning", lifespan="on", proxy_headers=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture(scope="session")
def live_server(web_home: Path) -> Iterator[str]:
    """The real app under uvicorn on 127.0.0.1 (free port) in a thread; yields its URL."""
    from papersift.settings import load_settings
    from papersift.web.app import create_app

    settings = load_settings(web_home, f"sqlite:///{web_home / 'papersift.db'}")
    with serve_in_thread(create_app(settings)) as url:
        yield url
