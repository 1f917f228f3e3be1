"""The Alembic chain builds exactly the schema the SQLAlchemy models declare, and the
real-metadata revision migrates an existing database in place."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from papersift.store.db import MIGRATIONS_DIR, Database
from papersift.store.schema import Base


def _diff(database: Database) -> list:
    with database.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(ctx, Base.metadata)


def test_migrations_match_the_models(db: Database) -> None:
    """On SQLite and PostgreSQL: no table, column, type or index differs."""
    assert _diff(db) == []
    columns = {c["name"] for c in inspect(db.engine).get_columns("papers")}
    assert {"announced", "primary_category", "comment"} <= columns
    indexes = {i["name"] for i in inspect(db.engine).get_indexes("papers")}
    assert "ix_papers_announced" in indexes


def _alembic(conn_url: str, target: str, *, down: bool = False) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = create_engine(conn_url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, target)
    engine.dispose()


def test_real_metadata_revision_migrates_existing_rows(tmp_path: Path) -> None:
    """A database at 0001 with a paper and a collection gains the new columns: NULL for the
    paper's, '' for the collection's title and description; downgrade removes them."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    _alembic(url, "0001")
    engine = create_engine(url)
    now = datetime(2026, 1, 2, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO papers (id, title_key, title, abstract, authors, categories,"
                " code_urls, has_code, sources, first_seen, modified_at, content_hash)"
                " VALUES ('p1', 'a', 'A', '', '[]', '[]', '[]', 0, '[]', :now, :now, 'x')"
            ),
            {"now": now},
        )
        conn.execute(
            text("INSERT INTO collections (name, origin, created_at) VALUES ('c', 'c.txt', :n)"),
            {"n": now},
        )
    engine.dispose()
    _alembic(url, "0002")
    engine = create_engine(url)
    with engine.begin() as conn:
        row = conn.execute(text("SELECT announced, primary_category, comment FROM papers")).one()
        assert tuple(row) == (None, None, None)
        coll = conn.execute(text("SELECT title, description FROM collections")).one()
        assert tuple(coll) == ("", "")
        conn.execute(text("UPDATE papers SET announced = :d"), {"d": date(2026, 1, 5)})
    engine.dispose()
    _alembic(url, "0001", down=True)
    engine = create_engine(url)
    cols = {c["name"] for c in inspect(engine).get_columns("papers")}
    assert "announced" not in cols
    assert {c["name"] for c in inspect(engine).get_columns("collections")} == {
        "id",
        "name",
        "origin",
        "created_at",
    }
    engine.dispose()


def test_a_database_at_the_newest_revision_is_not_handed_to_alembic(
    tmp_path: Path, monkeypatch
) -> None:
    """``HEAD_REVISION`` is Alembic's head; a database there opens without Alembic (its
    start-up cost is every command's), one behind it is upgraded by Alembic as before."""
    from alembic.script import ScriptDirectory

    from papersift.store import db as db_module

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(cfg).get_heads() == [db_module.HEAD_REVISION]
    url = f"sqlite:///{tmp_path / 'm.db'}"
    Database(url).dispose()  # created by Alembic
    _alembic(url, "-1", down=True)
    behind = Database(url, migrate=False)
    assert not behind.at_head()
    behind.migrate()  # Alembic upgrades it
    assert behind.at_head()
    behind.dispose()

    def refuse(*_args: object, **_kw: object) -> None:
        raise AssertionError("Alembic was asked to upgrade a current database")

    monkeypatch.setattr(command, "upgrade", refuse)
    Database(url).dispose()  # at head: Alembic is not asked
    stale = Database(url, migrate=False)
    with stale.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0010'"))
    assert not stale.at_head()
    with pytest.raises(db_module.DatabaseError, match="cannot open or migrate"):
        stale.migrate()  # not at head: Alembic is asked (and refuses here)
    stale.dispose()
