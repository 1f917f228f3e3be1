"""Shared fixtures: real SQLite files, the real PostgreSQL server, the seed corpus.

PostgreSQL tests use a throw-away database created on 127.0.0.1:5432 for the session and
dropped at the end; tables are emptied between tests instead of re-created, to stay fast.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from papersift.store.db import Database
from papersift.store.schema import Base

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "data" / "sample"
SHARED = ROOT.parent / "shared"
PG_ADMIN_URL = os.environ.get("PAPERSIFT_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def _pg_available() -> str | None:
    try:
        engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # noqa: BLE001 - any failure means "no server"
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
